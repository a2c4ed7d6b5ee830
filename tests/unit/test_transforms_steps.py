"""jq, filter, route, set and drop_fields steps on real CloudEvents, on both engines."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.json import decode_structured, encode_structured
from eventpipe.errors import ConfigError, PermanentError
from eventpipe.transforms import (
    ROUTE_EXTENSION,
    DropFieldsStep,
    FilterStep,
    JqStep,
    RouteStep,
    SetStep,
    TransformError,
    routed_topic,
)
from eventpipe.transforms.catalog import STEPS
from tests.unit.test_transforms_conformance import cross_engine  # noqa: F401

pytestmark = pytest.mark.usefixtures("cross_engine")

T0 = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def order_event(**data: Any) -> CloudEvent:
    payload: dict[str, Any] = {
        "order_id": "ord-000123",
        "customer": {"id": "cus-42", "email": "ada@example.com", "region": "EU"},
        "items": [
            {"sku": "A-1", "qty": 2, "note": "x"},
            {"sku": "B-2", "qty": 1, "note": "y"},
            {"sku": "C-3", "qty": 4, "note": "z"},
        ],
        "total": 48.5,
        "status": "paid",
    }
    payload.update(data)
    return CloudEvent(
        id="evt-1",
        source="/shop/orders",
        type="shop.order.paid",
        subject="ord-000123",
        time=T0,
        datacontenttype="application/json",
        data=payload,
        extensions={"partitionkey": "cus-42", "cdclsn": 7},
    )


@pytest.fixture(params=["jaq", "jq"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def jq(program: str, engine: str, **kw: Any) -> JqStep:
    step = JqStep.from_yaml({"program": program, "engine": engine, **kw})
    assert isinstance(step, JqStep)
    return step


def same_attributes(a: CloudEvent, b: CloudEvent) -> bool:
    return a.attributes() == b.attributes()


# --------------------------------------------------------------------- jq
def test_steps_are_in_the_catalog_by_name() -> None:
    assert set(STEPS) == {"jq", "filter", "route", "set", "drop_fields", "validate"}
    assert STEPS["jq"].build == JqStep.build and STEPS["jq"].config is JqStep.Config
    assert STEPS["route"].build == RouteStep.build
    assert all(p.kind == "step" and p.type == t and p.summary for t, p in STEPS.items())


def test_jq_one_output_replaces_data(engine: str) -> None:
    event = order_event()
    before = copy.deepcopy(event.data)
    [out] = jq("{id: .order_id, n: (.items | length)}", engine).process(event)
    assert out.data == {"id": "ord-000123", "n": 3}
    assert same_attributes(out, event)  # id, time, extensions... unchanged
    assert event.data == before  # input untouched


def test_jq_zero_outputs_drops_the_event(engine: str) -> None:
    assert jq('.items[] | select(.sku == "none")', engine).process(order_event()) == []
    assert jq("empty", engine).process(order_event()) == []


def test_jq_many_outputs_fan_out_with_distinct_ids(engine: str) -> None:
    outs = jq(".items[]", engine).process(order_event())
    assert [o.data["sku"] for o in outs] == ["A-1", "B-2", "C-3"]
    assert [o.id for o in outs] == ["evt-1:0", "evt-1:1", "evt-1:2"]
    assert all(o.source == "/shop/orders" and o.extensions["cdclsn"] == 7 for o in outs)
    # Deterministic: the same input gives the same ids (dedup on replay).
    assert [o.id for o in jq(".items[]", engine).process(order_event())] == [o.id for o in outs]


def test_jq_output_events_encode_and_decode(engine: str) -> None:
    for out in jq(".items[] | {sku, qty}", engine).process(order_event()):
        assert decode_structured(encode_structured(out)) == out


def test_jq_on_binary_data_is_a_transform_error(engine: str) -> None:
    event = CloudEvent(
        id="b", source="/s", type="t", data=b"\x00\x01", datacontenttype="application/octet-stream"
    )
    with pytest.raises(TransformError, match="data is binary"):
        jq(".", engine).process(event)


def test_jq_runtime_error_is_permanent_and_names_the_step(engine: str) -> None:
    step = JqStep.from_yaml({"program": ".total.amount", "engine": engine}, name="price")
    with pytest.raises(TransformError) as info:
        step.process(order_event())
    assert isinstance(info.value, PermanentError)
    assert info.value.step == "price"
    assert str(info.value).startswith("price: jq program failed")


def test_jq_apply_to_event_outputs_cloudevents(engine: str) -> None:
    program = (
        '.data.items[] as $i | {specversion, id: "\\(.id)-\\($i.sku)", source, type: "shop.item",'
    )
    program += " time, partitionkey: $i.sku, data: $i}"
    outs = jq(program, engine, apply_to="event").process(order_event())
    assert [o.id for o in outs] == ["evt-1-A-1", "evt-1-B-2", "evt-1-C-3"]
    assert outs[0].type == "shop.item"
    assert outs[0].time == T0
    assert outs[0].partitionkey == "A-1"
    assert outs[0].subject is None  # not carried: the program built the whole event
    assert outs[0].data == {"sku": "A-1", "qty": 2, "note": "x"}


def test_jq_apply_to_event_sees_attributes_and_extensions(engine: str) -> None:
    [out] = jq('.subject = (.type + "/" + (.cdclsn | tostring))', engine, apply_to="event").process(
        order_event()
    )
    assert out.subject == "shop.order.paid/7"
    assert out.extensions == {"partitionkey": "cus-42", "cdclsn": 7}
    assert out.data == order_event().data


def test_jq_apply_to_event_rejects_non_events(engine: str) -> None:
    with pytest.raises(TransformError, match=r"output 0 .* not a valid CloudEvent: id"):
        jq("del(.id)", engine, apply_to="event").process(order_event())
    with pytest.raises(TransformError, match="must be a JSON object"):
        jq(".data.total", engine, apply_to="event").process(order_event())
    with pytest.raises(TransformError, match="Bad_Name"):
        jq('. + {"Bad_Name": 1}', engine, apply_to="event").process(order_event())


def test_malformed_jq_program_fails_at_config_load() -> None:
    with pytest.raises(ConfigError) as info:
        JqStep.from_yaml("{id: .order_id")
    [(path, msg)] = info.value.problems
    assert path == ""
    assert "not a valid jq program" in msg


def test_jaq_only_gap_fails_at_load_and_names_engine_jq() -> None:
    with pytest.raises(ConfigError) as info:
        JqStep.from_yaml({"program": "$__loc__"})
    [(path, msg)] = info.value.problems
    assert path == "program"
    assert "engine: jq" in msg
    step = JqStep.from_yaml({"program": "{line: $__loc__.line}", "engine": "jq"})
    assert step.process(order_event())[0].data == {"line": 1}


def test_jq_config_is_typed() -> None:
    with pytest.raises(ConfigError) as info:
        JqStep.from_yaml({"program": "  ", "apply_to": "body", "engine": "gojq", "extra": 1})
    paths = sorted(p for p, _ in info.value.problems)
    assert paths == ["apply_to", "engine", "extra", "program"]


# ----------------------------------------------------------------- filter
@pytest.mark.parametrize(
    ("expression", "kept"),
    [
        ('.data.status == "paid"', True),
        ('.data.status == "refunded"', False),
        ('.type | startswith("shop.order.")', True),
        (".cdclsn > 5", True),
        (".data.missing", False),  # null
        (".data.total", True),  # a number is truthy
        ("0", True),  # jq truthiness, not Python's
        ("empty", False),  # no output
        ("false, true", False),  # the first output decides
        (".data.items[] | .qty > 3", False),
    ],
)
def test_filter(engine: str, expression: str, kept: bool) -> None:
    event = order_event()
    step = FilterStep.from_yaml({"expression": expression, "engine": engine})
    assert step.process(event) == ([event] if kept else [])


def test_filter_runtime_error(engine: str) -> None:
    step = FilterStep.from_yaml({"expression": ".data.total.x > 1", "engine": engine})
    with pytest.raises(TransformError):
        step.process(order_event())


def test_filter_on_binary_data_sees_data_base64(engine: str) -> None:
    event = CloudEvent(id="b", source="/s", type="t", data=b"hi", datacontenttype="text/plain")
    step = FilterStep.from_yaml({"expression": '.data_base64 == "aGk=" and .data == null'})
    assert step.process(event) == [event]


# ------------------------------------------------------------------ route
def test_route_marks_the_topic_in_an_extension(engine: str) -> None:
    step = RouteStep.from_yaml(
        {"expression": '"orders." + (.data.customer.region | ascii_downcase)', "engine": engine}
    )
    [out] = step.process(order_event())
    assert ROUTE_EXTENSION == "routetopic"
    assert out.extensions[ROUTE_EXTENSION] == "orders.eu"
    assert routed_topic(out) == "orders.eu"
    assert routed_topic(order_event()) is None
    assert out.data == order_event().data and out.id == "evt-1"
    # The extension travels with the event through the JSON format.
    assert routed_topic(decode_structured(encode_structured(out))) == "orders.eu"


def test_route_null_uses_default_or_leaves_the_event(engine: str) -> None:
    event = order_event()
    step = RouteStep.from_yaml({"expression": ".data.topic", "engine": engine})
    assert step.process(event) == [event]
    step = RouteStep.from_yaml({"expression": "empty", "default": "orders.other", "engine": engine})
    assert routed_topic(step.process(event)[0]) == "orders.other"


@pytest.mark.parametrize("expression", [".data.total", '"bad topic!"', '""'])
def test_route_rejects_non_topics(engine: str, expression: str) -> None:
    step = RouteStep.from_yaml({"expression": expression, "engine": engine})
    with pytest.raises(TransformError):
        step.process(order_event())


def test_route_default_is_checked_at_load() -> None:
    with pytest.raises(ConfigError) as info:
        RouteStep.from_yaml({"expression": ".x", "default": "no spaces allowed"})
    assert info.value.problems[0][0] == "default"


# -------------------------------------------------------------------- set
def test_set_attributes_and_extensions(engine: str) -> None:
    step = SetStep.from_yaml(
        {
            "fields": {
                "subject": ".data.items[0].sku",
                "partitionkey": ".data.customer.id",
                "region": ".data.customer.region | ascii_downcase",
                "itemcount": ".data.items | length",
                "gift": ".data.gift // false",
                "cdclsn": "null",
                "time": '"2024-06-01T00:00:00+02:00"',
                "type": '.type + ".v2"',
            },
            "engine": engine,
        }
    )
    [out] = step.process(order_event())
    assert out.subject == "A-1"
    assert out.type == "shop.order.paid.v2"
    assert out.time == datetime(2024, 5, 31, 22, 0, tzinfo=UTC)
    assert out.extensions == {
        "partitionkey": "cus-42",
        "region": "eu",
        "itemcount": 3,
        "gift": False,
    }
    assert out.data == order_event().data


def test_set_expressions_see_the_event_before_the_step(engine: str) -> None:
    step = SetStep.from_yaml(
        {"fields": {"subject": '"new"', "dataschema": '.subject + "-old"'}, "engine": engine}
    )
    [out] = step.process(order_event())
    assert (out.subject, out.dataschema) == ("new", "ord-000123-old")


def test_set_shorthand_is_the_mapping() -> None:
    [out] = SetStep.from_yaml({"partitionkey": ".data.order_id"}).process(order_event())
    assert out.partitionkey == "ord-000123"
    # `fields` holding a string (not a mapping) is an extension named fields.
    [out] = SetStep.from_yaml({"subject": ".data.status", "fields": '"f"'}).process(order_event())
    assert (out.subject, out.extensions["fields"]) == ("paid", "f")
    # The full form: a mapping under `fields`, beside options.
    step = SetStep.from_yaml({"fields": {"subject": ".data.status"}, "engine": "jq"})
    assert step.process(order_event())[0].subject == "paid"


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"subject": ".data.total"}, "subject: must be a string, got number"),
        ({"id": ".data.missing"}, "id: must be a non-empty string, got null"),
        ({"source": "empty"}, "yielded nothing"),
        ({"partitionkey": ".data.items"}, "extension values must be"),
        ({"bignum": "4294967296"}, "32 bits"),
        ({"time": '"yesterday"'}, "not an RFC 3339 timestamp"),
    ],
)
def test_set_bad_values_are_transform_errors(
    engine: str, fields: dict[str, str], match: str
) -> None:
    step = SetStep.from_yaml({"fields": fields, "engine": engine})
    with pytest.raises(TransformError, match=match):
        step.process(order_event())


def test_set_config_problems_all_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        SetStep.from_yaml(
            {"data": ".x", "specversion": '"2"', "Bad": ".x", "subject": ".a |||", "ok": " "}
        )
    problems = dict(info.value.problems)
    assert set(problems) == {"data", "specversion", "Bad", "subject", "ok"}
    assert "use a jq step" in problems["data"]
    assert "lower-case" in problems["Bad"]
    assert "not a valid jq program" in problems["subject"]


# ------------------------------------------------------------ drop_fields
def test_drop_fields() -> None:
    event = order_event()
    before = copy.deepcopy(event.data)
    step = DropFieldsStep.from_yaml(["customer.email", ".items[].note", "status", "no.such.path"])
    [out] = step.process(event)
    assert out.data == {
        "order_id": "ord-000123",
        "customer": {"id": "cus-42", "region": "EU"},
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}, {"sku": "C-3", "qty": 4}],
        "total": 48.5,
    }
    assert event.data == before  # copy on write
    assert out.data["items"] is not event.data["items"]
    assert same_attributes(out, event)


def test_drop_fields_index_and_whole_array() -> None:
    [out] = DropFieldsStep.from_yaml(["items[1]", "customer"]).process(order_event())
    assert [i["sku"] for i in out.data["items"]] == ["A-1", "C-3"]
    assert "customer" not in out.data
    [out] = DropFieldsStep.from_yaml("items[]").process(order_event())
    assert out.data["items"] == []


def test_drop_fields_nothing_to_drop_returns_the_same_event() -> None:
    event = order_event()
    assert DropFieldsStep.from_yaml(["nope", "items[7]", "total.x"]).process(event)[0] is event
    binary = CloudEvent(id="b", source="/s", type="t", data=b"x", datacontenttype="text/plain")
    assert DropFieldsStep.from_yaml("a").process(binary)[0] is binary


def test_drop_fields_bad_paths_at_load() -> None:
    with pytest.raises(ConfigError) as info:
        DropFieldsStep.from_yaml(["ok", "a..b", "", "x[y]"])
    assert [p for p, _ in info.value.problems] == ["[1]", "[2]", "[3]"]  # shorthand: the list
