"""Avro compatibility: every level, with changes that must pass and must fail."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eventpipe.schema_registry import compat
from eventpipe.schema_registry.errors import InvalidCompatibilityLevel
from eventpipe.schema_registry.models import SchemaReference
from eventpipe.schema_registry.schemas import ParsedSchema, ResolvedReference, parse


def avro(obj: Any, refs: tuple[ResolvedReference, ...] = ()) -> ParsedSchema:
    return parse("AVRO", json.dumps(obj), refs)


def record(*fields: dict[str, Any], name: str = "Order", **extra: Any) -> ParsedSchema:
    return avro(
        {"type": "record", "name": name, "namespace": "com.acme", "fields": list(fields), **extra}
    )


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def check(level: str, new: ParsedSchema, *old: ParsedSchema) -> list[str]:
    return compat.check(level, new, [(i + 1, s) for i, s in enumerate(old)])


def error_types(messages: list[str]) -> set[str]:
    return {m.split("'")[1] for m in messages if m.startswith("{errorType:")}


ID = f("id", "long")
ENUM_AB = {"type": "enum", "name": "Status", "symbols": ["A", "B"]}
ENUM_ABC = {"type": "enum", "name": "Status", "symbols": ["A", "B", "C"]}

# (case, old, new, {level: expected error type or None when compatible})
CASES: list[tuple[str, ParsedSchema, ParsedSchema, dict[str, str | None]]] = [
    (
        "field added with default",
        record(ID),
        record(ID, f("note", "string", default="")),
        {"BACKWARD": None, "FORWARD": None, "FULL": None},
    ),
    (
        "field added without default",
        record(ID),
        record(ID, f("note", "string")),
        {
            "BACKWARD": "READER_FIELD_MISSING_DEFAULT_VALUE",
            "FORWARD": None,
            "FULL": "READER_FIELD_MISSING_DEFAULT_VALUE",
        },
    ),
    (
        "field removed (old had no default)",
        record(ID, f("note", "string")),
        record(ID),
        {
            "BACKWARD": None,
            "FORWARD": "READER_FIELD_MISSING_DEFAULT_VALUE",
            "FULL": "READER_FIELD_MISSING_DEFAULT_VALUE",
        },
    ),
    (
        "field removed (old had a default)",
        record(ID, f("note", "string", default="")),
        record(ID),
        {"BACKWARD": None, "FORWARD": None, "FULL": None},
    ),
    (
        "promotion int -> long",
        record(f("n", "int")),
        record(f("n", "long")),
        {"BACKWARD": None, "FORWARD": "TYPE_MISMATCH", "FULL": "TYPE_MISMATCH"},
    ),
    (
        "narrowing long -> int",
        record(f("n", "long")),
        record(f("n", "int")),
        {"BACKWARD": "TYPE_MISMATCH", "FORWARD": None},
    ),
    (
        "promotion float -> double",
        record(f("n", "float")),
        record(f("n", "double")),
        {"BACKWARD": None, "FORWARD": "TYPE_MISMATCH"},
    ),
    (
        "string <-> bytes",
        record(f("s", "string")),
        record(f("s", "bytes")),
        {"BACKWARD": None, "FORWARD": None, "FULL": None},
    ),
    (
        "string -> int",
        record(f("s", "string")),
        record(f("s", "int")),
        {"BACKWARD": "TYPE_MISMATCH", "FORWARD": "TYPE_MISMATCH", "NONE": None},
    ),
    (
        "enum symbol added",
        record(f("status", ENUM_AB)),
        record(f("status", ENUM_ABC)),
        {"BACKWARD": None, "FORWARD": "MISSING_ENUM_SYMBOLS", "FULL": "MISSING_ENUM_SYMBOLS"},
    ),
    (
        "enum symbol added, old reader has an enum default",
        record(f("status", {**ENUM_AB, "default": "A"})),
        record(f("status", {**ENUM_ABC, "default": "A"})),
        {"BACKWARD": None, "FORWARD": None, "FULL": None},
    ),
    (
        "enum symbol removed",
        record(f("status", ENUM_ABC)),
        record(f("status", ENUM_AB)),
        {"BACKWARD": "MISSING_ENUM_SYMBOLS", "FORWARD": None},
    ),
    (
        "union branch added",
        record(f("v", ["null", "string"], default=None)),
        record(f("v", ["null", "string", "int"], default=None)),
        {"BACKWARD": None, "FORWARD": "MISSING_UNION_BRANCH", "FULL": "MISSING_UNION_BRANCH"},
    ),
    (
        "union branch removed",
        record(f("v", ["null", "string", "int"], default=None)),
        record(f("v", ["null", "string"], default=None)),
        {"BACKWARD": "MISSING_UNION_BRANCH", "FORWARD": None},
    ),
    (
        "type widened to a union holding it",
        record(f("v", "string")),
        record(f("v", ["null", "string"], default=None)),
        {"BACKWARD": None, "FORWARD": "TYPE_MISMATCH"},
    ),
    (
        "union reader promotes int to a long branch",
        record(f("v", "int")),
        record(f("v", ["null", "long"], default=None)),
        {"BACKWARD": None},
    ),
    (
        "record renamed",
        record(ID, name="Order"),
        record(ID, name="Purchase"),
        {"BACKWARD": "NAME_MISMATCH", "FORWARD": "NAME_MISMATCH"},
    ),
    (
        "record renamed with an alias for the old name",
        record(ID, name="Order"),
        record(ID, name="Purchase", aliases=["Order"]),
        {"BACKWARD": None},
    ),
    (
        "field renamed with an alias",
        record(f("name", "string")),
        record(f("full_name", "string", aliases=["name"])),
        {"BACKWARD": None, "FORWARD": "READER_FIELD_MISSING_DEFAULT_VALUE"},
    ),
    (
        "field renamed without an alias",
        record(f("name", "string")),
        record(f("full_name", "string")),
        {"BACKWARD": "READER_FIELD_MISSING_DEFAULT_VALUE"},
    ),
    (
        "fixed size changed",
        record(f("h", {"type": "fixed", "name": "Hash", "size": 16})),
        record(f("h", {"type": "fixed", "name": "Hash", "size": 32})),
        {"BACKWARD": "FIXED_SIZE_MISMATCH", "FORWARD": "FIXED_SIZE_MISMATCH"},
    ),
    (
        "array items promoted int -> long",
        record(f("xs", {"type": "array", "items": "int"})),
        record(f("xs", {"type": "array", "items": "long"})),
        {"BACKWARD": None, "FORWARD": "TYPE_MISMATCH"},
    ),
    (
        "map values changed string -> int",
        record(f("m", {"type": "map", "values": "string"})),
        record(f("m", {"type": "map", "values": "int"})),
        {"BACKWARD": "TYPE_MISMATCH"},
    ),
    (
        "nested record gains a field without default",
        record(f("addr", {"type": "record", "name": "Addr", "fields": [f("city", "string")]})),
        record(
            f(
                "addr",
                {
                    "type": "record",
                    "name": "Addr",
                    "fields": [f("city", "string"), f("zip", "string")],
                },
            )
        ),
        {"BACKWARD": "READER_FIELD_MISSING_DEFAULT_VALUE", "FORWARD": None},
    ),
]


@pytest.mark.parametrize(
    ("case", "old", "new", "level", "expected"),
    [
        pytest.param(case, old, new, level, expected, id=f"{case}-{level}")
        for case, old, new, levels in CASES
        for level, expected in levels.items()
    ],
)
def test_pairwise_cases(
    case: str, old: ParsedSchema, new: ParsedSchema, level: str, expected: str | None
) -> None:
    messages = check(level, new, old)
    if expected is None:
        assert messages == []
    else:
        assert expected in error_types(messages), messages
        assert f"{{compatibility: '{level}'}}" in messages
        assert "{oldSchemaVersion: 1}" in messages


def test_messages_name_the_field_and_path() -> None:
    messages = check("BACKWARD", record(ID, f("email", "string")), record(ID))
    assert messages[0] == (
        "{errorType:'READER_FIELD_MISSING_DEFAULT_VALUE', description:'The field 'email' at "
        "path '/fields/1' in the new schema has no default value and is missing in the old "
        "schema', additionalInfo:'email'}"
    )
    assert messages[-2].startswith('{oldSchema: \'{"type":"record"')


def test_forward_messages_speak_of_the_old_schema_reading() -> None:
    messages = check("FORWARD", record(ID), record(ID, f("note", "string")))
    assert (
        "in the old schema has no default value and is missing in the new schema" in (messages[0])
    )


def test_none_accepts_anything() -> None:
    assert check("NONE", avro("string"), record(ID)) == []


# v1 {id}, v2 {id, note default}, v3 {id, note without default}: v3 reads v2 but not v1
V1 = record(ID)
V2 = record(ID, f("note", "string", default=""))
V3 = record(ID, f("note", "string"))


def test_backward_checks_only_the_latest() -> None:
    assert check("BACKWARD", V3, V1, V2) == []


def test_backward_transitive_checks_every_version() -> None:
    messages = check("BACKWARD_TRANSITIVE", V3, V1, V2)
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in error_types(messages)
    assert "{oldSchemaVersion: 1}" in messages


# w1 {id, n}, w2 {id, n default 0}, w3 {id}: w2 reads w3 (default), w1 cannot
W1 = record(ID, f("n", "int"))
W2 = record(ID, f("n", "int", default=0))
W3 = record(ID)


def test_forward_checks_only_the_latest() -> None:
    assert check("FORWARD", W3, W1, W2) == []


def test_forward_transitive_checks_every_version() -> None:
    messages = check("FORWARD_TRANSITIVE", W3, W1, W2)
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in error_types(messages)
    assert "{oldSchemaVersion: 1}" in messages


def test_full_checks_only_the_latest() -> None:
    assert check("FULL", W3, W1, W2) == []


def test_full_transitive_checks_every_version_both_ways() -> None:
    messages = check("FULL_TRANSITIVE", W3, W1, W2)
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in error_types(messages)
    # and it fails on a backward-only break too
    assert check("FULL_TRANSITIVE", V3, V1, V2) != []


def test_recursive_types_terminate() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [f("value", "int"), f("next", ["null", "Node"], default=None)],
    }
    node2 = {
        "type": "record",
        "name": "Node",
        "fields": [f("value", "long"), f("next", ["null", "Node"], default=None)],
    }
    assert check("BACKWARD", avro(node2), avro(node)) == []
    assert "TYPE_MISMATCH" in error_types(check("FORWARD", avro(node2), avro(node)))


def test_changes_inside_a_referenced_type_are_seen() -> None:
    addr1 = avro(
        {
            "type": "record",
            "name": "Address",
            "namespace": "com.acme",
            "fields": [f("city", "string")],
        }
    )
    addr2 = avro(
        {
            "type": "record",
            "name": "Address",
            "namespace": "com.acme",
            "fields": [f("city", "string"), f("zip", "string")],
        }
    )
    order = {
        "type": "record",
        "name": "Order",
        "namespace": "com.acme",
        "fields": [f("ship_to", "com.acme.Address")],
    }
    old = avro(order, (ResolvedReference(SchemaReference("com.acme.Address", "addr", 1), addr1),))
    new = avro(order, (ResolvedReference(SchemaReference("com.acme.Address", "addr", 2), addr2),))
    messages = check("BACKWARD", new, old)
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in error_types(messages)
    assert "/fields/0/type/fields/1" in messages[0]


def test_schema_type_change_is_incompatible() -> None:
    json_schema = parse("JSON", '{"type": "object"}')
    assert "SCHEMA_TYPE_CHANGED" in error_types(check("BACKWARD", json_schema, record(ID)))


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(InvalidCompatibilityLevel) as info:
        check("SIDEWAYS", record(ID), record(ID))
    assert info.value.error_code == 42203


def test_lower_case_level_is_accepted() -> None:
    assert check("backward", record(ID, f("x", "int")), record(ID)) != []
