"""The validate step: JSON Schema (draft 7, 2020-12) and Avro, inline or by subject."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import orjson
import pytest
from fastavro.validation import validate as fastavro_validate

from eventpipe.envelope import CloudEvent
from eventpipe.errors import ConfigError, PermanentError, RetriableError, is_retriable
from eventpipe.transforms import SchemaValidationError, StepContext, ValidateStep
from eventpipe.transforms.avro_check import AvroChecker
from eventpipe.transforms.base import SchemaVersion

ORDER: dict[str, Any] = {
    "order_id": "ord-12",
    "customer": {"id": "cus-1", "email": "a@example.com"},
    "items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}],
    "total": 10.5,
}

DRAFT7: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["order_id", "customer", "items"],
    "properties": {
        "order_id": {"type": "string", "pattern": "^ord-[0-9]+$"},
        "customer": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}, "email": {"type": "string"}},
        },
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
            },
        },
        "total": {"type": "number", "minimum": 0},
    },
    # draft 7: `dependencies`; 2020-12 splits it into dependentRequired / dependentSchemas
    "dependencies": {"total": ["items"]},
}

DRAFT2020: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["order_id", "items"],
    "properties": {
        "order_id": {"type": "string"},
        # 2020-12 only: prefixItems (a tuple), and `items` for the rest
        "items": {
            "type": "array",
            "prefixItems": [{"type": "object", "required": ["sku"]}],
            "items": {"type": "object", "properties": {"qty": {"maximum": 1}}},
        },
    },
    "dependentRequired": {"total": ["customer"]},
}

AVRO: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "order_id", "type": "string"},
        {
            "name": "customer",
            "type": {
                "type": "record",
                "name": "Customer",
                "fields": [
                    {"name": "id", "type": "string"},
                    {"name": "email", "type": ["null", "string"], "default": None},
                ],
            },
        },
        {
            "name": "items",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Item",
                    "fields": [{"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}],
                },
            },
        },
        {"name": "total", "type": "double"},
        {
            "name": "status",
            "type": {"type": "enum", "name": "Status", "symbols": ["paid", "open"]},
            "default": "open",
        },
    ],
}


def event(data: Any) -> CloudEvent:
    return CloudEvent(id="e1", source="/s", type="t", data=data, datacontenttype="application/json")


def with_(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(ORDER)
    d.update(changes)
    return d


def violations(step: ValidateStep, data: Any) -> list[tuple[str, str]]:
    with pytest.raises(SchemaValidationError) as info:
        step.process(event(data))
    return [(v.path, v.rule) for v in info.value.violations]


# ------------------------------------------------------------- JSON Schema
def test_json_schema_draft7_pass_and_fail() -> None:
    step = ValidateStep.from_yaml({"schema": DRAFT7})
    ev = event(ORDER)
    assert step.process(ev) == [ev]
    bad = with_(items=[{"sku": "A", "qty": 0}, {"qty": 1}], order_id="x-1")
    assert violations(step, bad) == [
        ("$.order_id", "pattern"),
        ("$.items[0].qty", "minimum"),
        ("$.items[1]", "required"),
    ]


def test_json_schema_error_message_names_path_rule_and_reason() -> None:
    step = ValidateStep.from_yaml({"schema": DRAFT7}, name="steps[2].validate")
    with pytest.raises(SchemaValidationError) as info:
        step.process(event(with_(items=[{"sku": "A", "qty": 0}])))
    msg = str(info.value)
    assert msg.startswith("steps[2].validate: data does not match the schema (1 violation(s))")
    assert "$.items[0].qty: minimum: 0 is less than the minimum of 1" in msg
    assert info.value.stage == "validate"
    assert isinstance(info.value, PermanentError) and not is_retriable(info.value)


def test_json_schema_draft7_keyword_dependencies() -> None:
    step = ValidateStep.from_yaml({"schema": DRAFT7})
    data = with_()
    del data["items"]
    assert ("$", "dependencies") in violations(step, data)


def test_json_schema_2020_12_keywords() -> None:
    step = ValidateStep.from_yaml({"schema": DRAFT2020})
    ok = {"order_id": "o", "items": [{"sku": "A", "qty": 5}, {"qty": 1}]}
    assert step.process(event(ok)) == [event(ok)]
    # prefixItems: the first item needs sku; `items` (the rest) caps qty at 1
    bad = {"order_id": "o", "items": [{"qty": 5}, {"qty": 2}], "total": 1}
    assert sorted(violations(step, bad)) == [
        ("$", "dependentRequired"),
        ("$.items[0]", "required"),
        ("$.items[1].qty", "maximum"),
    ]


def test_explicit_draft_overrides_detection() -> None:
    schema = {"items": [{"type": "string"}]}  # draft 7: a tuple; 2020-12: not a valid `items`
    assert ValidateStep.from_yaml({"schema": schema, "draft": 7}).process(event(["a", 1]))
    with pytest.raises(SchemaValidationError):
        ValidateStep.from_yaml({"schema": schema, "draft": "7"}).process(event([1]))
    with pytest.raises(ConfigError, match="invalid JSON Schema"):
        ValidateStep.from_yaml({"schema": schema, "draft": "2020-12"})


def test_schema_given_as_json_text() -> None:
    step = ValidateStep.from_yaml({"schema": '{"type": "object", "required": ["a"]}'})
    assert violations(step, {}) == [("$", "required")]


def test_binary_data_does_not_validate() -> None:
    step = ValidateStep.from_yaml({"schema": {"type": "object"}})
    binary = CloudEvent(id="b", source="/s", type="t", data=b"\x00", datacontenttype="x/y")
    with pytest.raises(SchemaValidationError, match="binary"):
        step.process(binary)


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        ({"type": 5}, "invalid JSON Schema"),
        (
            {"properties": {"a": {"minimum": "x"}}},
            r"invalid JSON Schema: .*\$\.properties\.a\.minimum",
        ),
        ({"pattern": "("}, "invalid JSON Schema"),
        ({"$ref": "#/nope"}, "invalid JSON Schema"),
        ({"$ref": "https://example.com/remote.json"}, "Retrieval is disabled"),
        ("{not json", "schema text is not JSON"),
        ([1, 2], "a JSON Schema is an object or a boolean"),
    ],
)
def test_malformed_json_schema_fails_at_load(schema: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        ValidateStep.from_yaml({"schema": schema})
    assert info.value.problems[0][0] == "schema"


# -------------------------------------------------------------------- Avro
def test_avro_pass_and_fail() -> None:
    step = ValidateStep.from_yaml({"schema": AVRO, "schema_type": "AVRO"})
    assert step.process(event(ORDER)) == [event(ORDER)]  # status missing: its default
    bad = with_(items=[{"sku": "A", "qty": 2**40}, {"sku": 3, "qty": 1}], status="shipped")
    bad["customer"] = {"email": 7}
    with pytest.raises(SchemaValidationError) as info:
        step.process(event(bad))
    got = [(v.path, v.rule) for v in info.value.violations]
    assert got == [
        ("$.customer.id", "string"),
        ("$.customer.email", "string"),  # a nullable string: what is wrong with the string
        ("$.items[0].qty", "int"),
        ("$.items[1].sku", "string"),
        ("$.status", "enum shop.Status"),
    ]
    msg = str(info.value)
    assert "$.customer.id: string: expected string, got null None" in msg
    assert "$.items[0].qty: int: 1099511627776 is out of range for int" in msg
    assert "$.status: enum shop.Status: 'shipped' is not one of ['paid', 'open']" in msg


def test_avro_nullable_record_explains_inside() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {
                "name": "c",
                "type": [
                    "null",
                    {"type": "record", "name": "C", "fields": [{"name": "x", "type": "long"}]},
                ],
            }
        ],
    }
    step = ValidateStep.from_yaml({"schema": schema, "schema_type": "avro"})
    assert step.process(event({"c": None}))
    assert violations(step, {"c": {"x": "1"}}) == [("$.c.x", "long")]


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        (
            {"type": "record", "name": "R", "fields": [{"name": "a", "type": "strin"}]},
            "UnknownType",
        ),
        ({"type": "record", "fields": []}, "name"),
        ({"type": "enum", "name": "E", "symbols": ["ok", "not ok"]}, "symbol"),
        (
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "a", "type": "int", "default": "x"}],
            },
            "Default value",
        ),
        ("nosuchtype", "UnknownType"),
    ],
)
def test_malformed_avro_schema_fails_at_load(schema: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        ValidateStep.from_yaml({"schema": schema, "schema_type": "AVRO"})
    assert info.value.problems[0][0] == "schema"


AGREEMENT_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "All",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
        {"name": "a", "type": {"type": "array", "items": "int"}},
        {"name": "m", "type": {"type": "map", "values": "string"}},
        {"name": "u", "type": ["null", "string", "long"]},
        {"name": "r", "type": ["null", "All"], "default": None},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "dt", "type": {"type": "int", "logicalType": "date"}},
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "x", "type": "string", "default": "dflt"},
    ],
}
GOOD: dict[str, Any] = {
    "n": None,
    "b": True,
    "i": 1,
    "l": 2**40,
    "f": 1.5,
    "d": 2,
    "s": "x",
    "e": "A",
    "a": [1, 2],
    "m": {"k": "v"},
    "u": 5,
    "r": None,
    "ts": 1700000000000,
    "dt": "2024-05-01",
    "uid": "6f1c1e9e-0000-4000-8000-000000000000",
}
SAMPLE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -(2**31),
    2**31,
    2**63,
    1.5,
    2.0,
    "",
    "A",
    "C",
    "2024-05-01",
    [],
    [1, "a"],
    {},
    {"k": 1},
    {"k": "v"},
    {"n": None},
]


def agreement_cases() -> list[Any]:
    cases: list[Any] = [GOOD, {**GOOD, "r": copy.deepcopy(GOOD)}, {}, [], "x", None]
    for field, value in itertools.product(sorted(GOOD), SAMPLE_VALUES):
        cases.append({**GOOD, field: value})
    for field in GOOD:
        cases.append({k: v for k, v in GOOD.items() if k != field})
    return cases


def test_avro_checker_agrees_with_fastavro_validation() -> None:
    checker = AvroChecker(AGREEMENT_SCHEMA)
    cases = agreement_cases()
    valid = 0
    for datum in cases:
        try:
            expected = fastavro_validate(datum, checker.parsed, raise_errors=False)
        except ValueError:  # fastavro raises on a date string that is not ISO
            expected = False
        assert checker.is_valid(datum) is expected, datum
        if expected:
            valid += 1
        else:
            assert checker.violations(datum)  # says why
    assert 20 < valid < len(cases) - 50  # both outcomes are well covered


# ---------------------------------------------------------------- registry
class FakeRegistry:
    def __init__(self) -> None:
        self.calls: list[tuple[str, SchemaVersion]] = []
        self.subjects = {
            "orders-value": {
                1: ("JSON", orjson.dumps({"type": "object"}).decode()),
                2: ("JSON", orjson.dumps(DRAFT7).decode()),
            },
            "orders-avro": {1: ("AVRO", orjson.dumps(AVRO).decode())},
            "legacy": {1: ("", orjson.dumps({"type": "string"}).decode())},
            "proto": {1: ("PROTOBUF", "syntax = 'proto3';")},
        }

    def __call__(self, subject: str, version: SchemaVersion) -> tuple[str, str]:
        self.calls.append((subject, version))
        if subject == "down":
            raise RetriableError("registry unreachable")
        versions = self.subjects[subject]
        return versions[max(versions) if version == "latest" else version]


def test_subject_resolved_once_at_load() -> None:
    registry = FakeRegistry()
    ctx = StepContext(resolve_schema=registry)
    step = ValidateStep.from_yaml("orders-value", context=ctx)  # shorthand: latest
    assert registry.calls == [("orders-value", "latest")]
    assert step.schema_type == "JSON"
    assert violations(step, with_(order_id="nope")) == [("$.order_id", "pattern")]
    for _ in range(3):
        step.process(event(ORDER))
    assert len(registry.calls) == 1
    old = ValidateStep.from_yaml({"subject": "orders-value", "version": 1}, context=ctx)
    assert old.process(event({"anything": 1}))
    avro = ValidateStep.from_yaml({"subject": "orders-avro"}, context=ctx)
    assert avro.schema_type == "AVRO"
    legacy = ValidateStep.from_yaml({"subject": "legacy"}, context=ctx)  # no type: Avro
    assert legacy.schema_type == "AVRO" and legacy.process(event("a string"))


def test_subject_problems_are_config_errors() -> None:
    ctx = StepContext(resolve_schema=FakeRegistry())
    with pytest.raises(ConfigError, match="needs a schema registry"):
        ValidateStep.from_yaml("orders-value")
    with pytest.raises(ConfigError, match="cannot resolve 'nope' version latest"):
        ValidateStep.from_yaml("nope", context=ctx)
    with pytest.raises(ConfigError, match="PROTOBUF"):
        ValidateStep.from_yaml("proto", context=ctx)
    with pytest.raises(ConfigError, match="is AVRO but 'orders-value' holds JSON"):
        ValidateStep.from_yaml({"subject": "orders-value", "schema_type": "AVRO"}, context=ctx)


def test_unreachable_registry_stays_retriable() -> None:
    ctx = StepContext(resolve_schema=FakeRegistry())
    with pytest.raises(RetriableError):
        ValidateStep.from_yaml("down", context=ctx)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({}, "exactly one of `schema:`"),
        ({"schema": {}, "subject": "x"}, "exactly one of `schema:`"),
        ({"schema": {}, "version": 2}, "`version:` only applies"),
        ({"schema": {}, "schema_type": "AVRO", "draft": 7}, "`draft:` only applies"),
        ({"subject": "x", "version": 0}, "versions start at 1"),
        ({"schema": {}, "schema_type": "XML"}, "JSON"),
        ({"schema": {}, "draft": 4}, "'7' or '2020-12'"),
    ],
)
def test_validate_config_rules(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ValidateStep.from_yaml(config)
