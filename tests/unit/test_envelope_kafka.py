"""Kafka protocol binding (eventpipe.envelope.kafka)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import orjson
import pytest

from eventpipe.envelope import CloudEvent, KafkaMessage, from_kafka, to_kafka
from eventpipe.errors import InvalidEventError, MalformedEventError, UnsupportedMediaTypeError

T0 = datetime(2024, 5, 1, 12, 30, 0, 250_000, tzinfo=UTC)


def make(**kw: object) -> CloudEvent:
    base: dict[str, object] = {
        "id": "e-1",
        "source": "/db/public/orders",
        "type": "com.example.orders.created",
        "subject": "Bestellung Nr. 5 für €",
        "time": T0,
        "datacontenttype": "application/json",
        "dataschema": "https://example.com/s.json",
        "data": {"after": {"id": 5, "total": 12.5}, "op": "c"},
        "extensions": {
            "partitionkey": "order-5",
            "cdclsn": "0/16B6A38",
            "traceparent": "00-x-y-01",
        },
    }
    base.update(kw)
    return CloudEvent(**base)  # type: ignore[arg-type]


def header(msg: KafkaMessage, name: str) -> bytes | None:
    found = [v for k, v in msg.headers if k == name]
    assert len(found) <= 1, f"duplicate header {name}"
    return found[0] if found else None


EVENTS = [
    make(),
    make(data=None),
    make(data=[1, "two", None]),
    make(data="just a JSON string"),
    make(data=0),
    make(datacontenttype="application/octet-stream", data=b"\x00\xff\x80binary"),
    make(datacontenttype="application/avro", data=b""),  # empty payload reads back as no data
    make(datacontenttype=None, data=b"\xff\xfe not json"),
    make(datacontenttype="text/plain; charset=utf-8", data="Grüße".encode()),
    make(subject=None, dataschema=None, extensions={}),
    CloudEvent(id="x", source="/s", type="t"),
]
IDS = [
    "json",
    "no-data",
    "json-list",
    "json-string",
    "json-zero",
    "bytes",
    "empty-bytes",
    "bytes-no-ct",
    "text",
    "minimal",
    "bare",
]


def _expected_after_binary(e: CloudEvent) -> CloudEvent:
    if e.data == b"":
        return e.replace(data=None)
    return e


@pytest.mark.parametrize("event", EVENTS, ids=IDS)
def test_binary_round_trip(event: CloudEvent) -> None:
    msg = to_kafka(event)
    assert from_kafka(msg.key, msg.value, msg.headers) == _expected_after_binary(event)


@pytest.mark.parametrize("event", EVENTS, ids=IDS)
def test_structured_round_trip(event: CloudEvent) -> None:
    msg = to_kafka(event, mode="structured")
    assert from_kafka(msg.key, msg.value, msg.headers) == event


def test_binary_layout() -> None:
    msg = to_kafka(make(extensions={"partitionkey": "order-5", "seq": 7, "flag": True}))
    assert msg.key == b"order-5"
    assert dict(msg.headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"e-1",
        "ce_source": b"/db/public/orders",
        "ce_type": b"com.example.orders.created",
        "ce_subject": "Bestellung Nr. 5 für €".encode(),
        "ce_time": b"2024-05-01T12:30:00.250000Z",
        "ce_dataschema": b"https://example.com/s.json",
        "ce_partitionkey": b"order-5",
        "ce_seq": b"7",
        "ce_flag": b"true",
        "content-type": b"application/json",
    }
    assert len(msg.headers) == len(dict(msg.headers))
    assert orjson.loads(msg.value or b"") == {"after": {"id": 5, "total": 12.5}, "op": "c"}
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in msg.headers)


def test_binary_no_data_has_no_value() -> None:
    msg = to_kafka(make(data=None, datacontenttype=None))
    assert msg.value is None
    assert header(msg, "content-type") is None


def test_binary_bytes_are_sent_as_is() -> None:
    msg = to_kafka(make(datacontenttype="application/octet-stream", data=b"\x00\x01"))
    assert msg.value == b"\x00\x01"
    assert header(msg, "content-type") == b"application/octet-stream"


def test_binary_json_without_content_type_declares_json() -> None:
    e = make(datacontenttype=None, data={"a": 1})
    msg = to_kafka(e)
    assert header(msg, "content-type") == b"application/json"
    back = from_kafka(msg.key, msg.value, msg.headers)
    assert back.datacontenttype == "application/json"
    assert back.data == {"a": 1}


def test_structured_layout() -> None:
    e = make(data=None)
    msg = to_kafka(e, mode="structured")
    assert msg.key == b"order-5"
    assert msg.headers == [("content-type", b"application/cloudevents+json; charset=utf-8")]
    body = orjson.loads(msg.value or b"")
    assert body["id"] == "e-1"
    assert body["partitionkey"] == "order-5"
    assert body["time"] == "2024-05-01T12:30:00.250000Z"
    assert "data" not in body


def test_key_is_none_without_partitionkey_and_canonical_otherwise() -> None:
    assert to_kafka(make(extensions={})).key is None
    assert to_kafka(make(extensions={}), mode="structured").key is None
    assert to_kafka(make(extensions={"partitionkey": 42})).key == b"42"
    assert to_kafka(make(extensions={"partitionkey": True}), mode="structured").key == b"true"


def test_binary_extension_values_come_back_as_strings() -> None:
    e = make(extensions={"seq": 7, "flag": False, "name": "n"})
    msg = to_kafka(e)
    back = from_kafka(msg.key, msg.value, msg.headers)
    assert back.extensions == {"seq": "7", "flag": "false", "name": "n"}
    # structured mode keeps the JSON types
    msg = to_kafka(e, mode="structured")
    assert from_kafka(msg.key, msg.value, msg.headers).extensions == e.extensions


def test_kafka_message_is_slotted_dataclass() -> None:
    assert dataclasses.is_dataclass(KafkaMessage)
    assert "__slots__" in KafkaMessage.__dict__
    m = KafkaMessage(key=None, value=b"v", headers=[])
    with pytest.raises(AttributeError):
        m.other = 1  # type: ignore[attr-defined]


def test_invalid_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        to_kafka(make(), mode="batch")  # type: ignore[arg-type]


def test_unencodable_data_names_data() -> None:
    with pytest.raises(InvalidEventError) as ei:
        to_kafka(make(data={"x": {1, 2}}))
    assert ei.value.field == "data"
    with pytest.raises(InvalidEventError) as ei:
        to_kafka(make(data={"x": {1, 2}}), mode="structured")
    assert ei.value.field == "data"


# ------------------------------------------------------------------- decoding
def binary_headers(**extra: bytes) -> list[tuple[str, bytes]]:
    h = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"abc"),
        ("ce_source", b"/s"),
        ("ce_type", b"t"),
    ]
    h.extend((k, v) for k, v in extra.items())
    return h


def test_from_kafka_accepts_aiokafka_tuples_and_mappings() -> None:
    h = binary_headers(ce_time=b"2024-05-01T14:30:00.25+02:00")
    h.append(("content-type", b"application/json"))
    a = from_kafka(None, b'{"k": [1]}', tuple(h))
    b = from_kafka(None, b'{"k": [1]}', dict(h))
    assert a == b
    assert (a.id, a.source, a.type, a.time, a.data) == ("abc", "/s", "t", T0, {"k": [1]})


def test_header_names_are_case_insensitive() -> None:
    h = [("CE_SpecVersion", b"1.0"), ("ce_ID", b"abc"), ("Ce_Source", b"/s"), ("ce_type", b"t")]
    h.append(("Content-Type", b"text/plain"))
    e = from_kafka(None, b"hi", h)
    assert (e.id, e.datacontenttype, e.data) == ("abc", "text/plain", b"hi")


def test_partitionkey_from_key_when_header_missing() -> None:
    e = from_kafka(b"order-9", None, binary_headers())
    assert e.extensions == {"partitionkey": "order-9"}
    assert e.data is None


def test_partitionkey_header_wins_over_key() -> None:
    e = from_kafka(b"other", None, binary_headers(ce_partitionkey=b"pk"))
    assert e.extensions["partitionkey"] == "pk"


def test_non_utf8_key_is_not_a_partitionkey() -> None:
    e = from_kafka(b"\x00\xff\xfe", None, binary_headers())
    assert "partitionkey" not in e.extensions


def test_structured_partitionkey_from_key() -> None:
    value = orjson.dumps({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"})
    ct = [("content-type", b"application/cloudevents+json")]
    assert from_kafka(b"k", value, ct).extensions == {"partitionkey": "k"}
    value = orjson.dumps(
        {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "partitionkey": "inner"}
    )
    assert from_kafka(b"k", value, ct).extensions == {"partitionkey": "inner"}


def test_structured_detected_case_insensitively_and_ignores_ce_headers() -> None:
    value = orjson.dumps({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": 5})
    h = [*binary_headers(), ("content-type", b"Application/CloudEvents+JSON; charset=UTF-8")]
    e = from_kafka(None, value, h)
    assert (e.id, e.data) == ("1", 5)


def test_no_content_type_json_payload_is_parsed_other_bytes_kept() -> None:
    assert from_kafka(None, b'{"a": 1}', binary_headers()).data == {"a": 1}
    assert from_kafka(None, b"\xff\x00", binary_headers()).data == b"\xff\x00"


def test_empty_value_is_no_data() -> None:
    h = [*binary_headers(), ("content-type", b"application/json")]
    assert from_kafka(None, b"", h).data is None


def test_null_header_values_are_skipped() -> None:
    h: list[tuple[str, bytes | None]] = [*binary_headers(), ("ce_subject", None)]
    assert from_kafka(None, None, h).subject is None


def test_unrelated_headers_are_ignored() -> None:
    h = [*binary_headers(), ("traceparent", b"00-a-b-01"), ("x-custom", b"\xff")]
    assert from_kafka(None, None, h).extensions == {}


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ([("ce_id", b"1"), ("ce_source", b"/s"), ("ce_type", b"t")], "specversion"),
        ([], "specversion"),
        (
            [("ce_specversion", b"0.3"), ("ce_id", b"1"), ("ce_source", b"/s"), ("ce_type", b"t")],
            "specversion",
        ),
        ([("ce_specversion", b"1.0"), ("ce_source", b"/s"), ("ce_type", b"t")], "id"),
        ([("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_type", b"t")], "source"),
        ([("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"/s")], "type"),
        (
            [("ce_specversion", b"1.0"), ("ce_id", b""), ("ce_source", b"/s"), ("ce_type", b"t")],
            "id",
        ),
        (binary_headers(ce_time=b"yesterday"), "time"),
        (binary_headers(ce_time=b"2024-05-01T12:30:00"), "time"),
        (binary_headers(**{"ce_bad.name": b"x"}), "bad.name"),
        (binary_headers(ce_data=b"x"), "data"),
        (binary_headers(ce_subject=b""), "subject"),
    ],
)
def test_binary_errors_name_the_field(headers: list[tuple[str, bytes]], field: str) -> None:
    with pytest.raises(InvalidEventError) as ei:
        from_kafka(None, None, headers)
    assert ei.value.field == field


def test_missing_headers_entirely() -> None:
    with pytest.raises(InvalidEventError) as ei:
        from_kafka(None, b"{}", None)
    assert ei.value.field == "specversion"


def test_bad_json_data_is_malformed_data() -> None:
    h = [*binary_headers(), ("content-type", b"application/json")]
    with pytest.raises(MalformedEventError) as ei:
        from_kafka(None, b"{not json", h)
    assert ei.value.field == "data"


def test_non_utf8_header_is_malformed() -> None:
    with pytest.raises(MalformedEventError) as ei:
        from_kafka(None, None, binary_headers(ce_subject=b"\xff\xfe"))
    assert ei.value.field == "subject"


@pytest.mark.parametrize("value", [b"{oops", b"[]", b"", None])
def test_structured_malformed_value(value: bytes | None) -> None:
    h = [("content-type", b"application/cloudevents+json")]
    with pytest.raises(MalformedEventError) as ei:
        from_kafka(None, value, h)
    assert ei.value.field == "value"


def test_structured_invalid_event_names_field() -> None:
    h = [("content-type", b"application/cloudevents+json")]
    value = orjson.dumps({"specversion": "1.0", "source": "/s", "type": "t"})
    with pytest.raises(InvalidEventError) as ei:
        from_kafka(None, value, h)
    assert ei.value.field == "id"


@pytest.mark.parametrize(
    "ct", [b"application/cloudevents+avro", b"application/cloudevents-batch+json"]
)
def test_unsupported_event_formats(ct: bytes) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as ei:
        from_kafka(None, b"{}", [("content-type", ct)])
    assert "application/cloudevents+json" in ei.value.accepted


BEYOND_DOUBLE = (
    b'{"f": 1e400, "g": [-1E+400], "big": 123456789012345678901234567890,'
    b' "p": 0.1000000000000000055511151231257827, "n": 7}'
)


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_numbers_beyond_a_double_are_read_as_libjq_reads_them(mode: str) -> None:
    """A CDC event may carry json numbers no double holds (1e400): the event decodes,
    and its data holds what libjq itself reads from the same text."""
    import jq

    msg = to_kafka(make(data=None), mode=mode)  # type: ignore[arg-type]
    if mode == "binary":
        msg = KafkaMessage(msg.key, BEYOND_DOUBLE, msg.headers)
    else:
        doc = orjson.loads(msg.value or b"")
        body = orjson.dumps(doc)[:-1] + b',"data":' + BEYOND_DOUBLE + b"}"
        msg = KafkaMessage(msg.key, body, msg.headers)
    data = from_kafka(msg.key, msg.value, msg.headers).data
    assert data == jq.compile(".").input_text(BEYOND_DOUBLE.decode()).first()
    assert data["f"] == 1.7976931348623157e308 and data["g"] == [-1.7976931348623157e308]
    assert data["n"] == 7 and isinstance(data["n"], int)


def test_json_that_is_malformed_for_another_reason_stays_malformed() -> None:
    ok = to_kafka(make())
    for bad in (b'{"f": 1e400', b'{"f": 1e400, "s": "\\ud800"}x', b'{"f": NaN}'):
        with pytest.raises(MalformedEventError):
            from_kafka(ok.key, bad, ok.headers)
