"""The postgres sink maps plain-path columns in Python: the same values (and the
same failures) as its jq program."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eventpipe.connectors.sinks.postgres import (
    PostgresSink,
    PostgresSinkConfig,
    RowMappingError,
    json_text,
    simple_path,
)
from eventpipe.envelope import CloudEvent
from eventpipe.sink import DeliveryItem
from eventpipe.transforms.event_form import event_form_getter, to_event_form

COLUMNS = {"id": ".id", "oid": ".data.order_id", "deep": ".data.a.b", "ext": ".region"}


def sink(columns: dict[str, str]) -> PostgresSink:
    return PostgresSink(PostgresSinkConfig(table="t", columns=columns), name="pg")


def event(data: Any) -> CloudEvent:
    return CloudEvent.create("t", "/s", data, id="e1", region="eu")


@pytest.mark.parametrize(
    "data",
    [
        {"order_id": "o1", "a": {"b": [1, 2]}},
        {"order_id": 7.5},
        {"a": None},
        {},
        None,
        {"order_id": {"x": 1}, "a": {"b": {"c": True}}},
    ],
)
def test_fast_rows_equal_the_jq_rows(data: Any) -> None:
    s = sink(COLUMNS)
    assert s._paths is not None
    item = DeliveryItem(0, [event(data)])
    fast, slow = s._row(item, 0), s._row_jq(item, 0)
    assert [getattr(v, "obj", v) for v in fast] == [getattr(v, "obj", v) for v in slow]


@pytest.mark.parametrize("data", [{"a": "text"}, {"a": [1]}, [1, 2], "scalar"])
def test_a_value_jq_cannot_index_fails_the_row_as_jq_does(data: Any) -> None:
    s = sink(COLUMNS)
    with pytest.raises(RowMappingError):
        s._row(DeliveryItem(0, [event(data)]), 0)


def test_only_plain_paths_take_the_fast_way() -> None:
    assert simple_path(".data.order_id") == ("data", "order_id")
    for expr in [".", ".a?", ".[0]", ".a | tostring", '.["a"]', "..", ".a.b[]"]:
        assert simple_path(expr) is None
    assert sink({"id": ".id", "n": ".data.n | tonumber"})._paths is None


@pytest.mark.parametrize("data", [{"a": 1}, b"\x00\x01", None, [1, 2]])
@pytest.mark.parametrize(
    "key",
    [
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
        "region",
        "absent",
    ],
)
def test_the_attribute_getters_answer_as_the_event_form(data: Any, key: str) -> None:
    ev = CloudEvent.create("t", "/s", data, id="e1", subject="sub", region="eu")
    assert event_form_getter(key)(ev) == to_event_form(ev).get(key)


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, "é", {"b": True}], "c": "line\nbreak \\ tab\t"},
        [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}],
        {"n": None, "s": "null"},  # a null: json.dumps's text
        {"big": 2**70},  # beyond 64 bits: orjson cannot, json.dumps can
        {1: "x"},  # a key that is not a string
        [float("nan")],  # json.dumps writes NaN (PostgreSQL refuses it), orjson null
        [float("inf")],
    ],
)
def test_jsonb_text_means_what_json_dumps_wrote(value: Any) -> None:
    text = json_text(value)
    want = json.dumps(value)
    if isinstance(text, str):
        assert text == want
    else:  # orjson: the same JSON value (PostgreSQL stores the parsed value)
        assert json.loads(text) == json.loads(want)
        assert b"null" not in text and "NaN" not in want and "Infinity" not in want
