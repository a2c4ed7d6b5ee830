"""The CloudEvent model and the JSON event format (eventpipe.envelope.event / .json)."""

from __future__ import annotations

import base64
import time as _time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from eventpipe.envelope import (
    CloudEvent,
    decode_batch,
    decode_structured,
    encode_batch,
    encode_structured,
    format_time,
    from_structured_dict,
    is_json_content_type,
    new_id,
    parse_time,
    to_structured_dict,
)
from eventpipe.errors import InvalidEventError, MalformedEventError

T0 = datetime(2024, 5, 1, 12, 30, 0, tzinfo=UTC)


def ev(**kw: object) -> CloudEvent:
    base: dict[str, object] = {"id": "e-1", "source": "/src", "type": "com.example.thing"}
    base.update(kw)
    return CloudEvent(**base)  # type: ignore[arg-type]


# ------------------------------------------------------------------ create / ids
def test_create_defaults_uuid7_id_utc_time_and_json_content_type() -> None:
    before = datetime.now(UTC)
    e = CloudEvent.create("com.example.thing", "/src", {"a": 1})
    after = datetime.now(UTC)
    u = uuid.UUID(e.id)
    assert u.version == 7
    assert e.specversion == "1.0"
    assert e.time is not None and e.time.utcoffset() == timedelta(0)
    assert before <= e.time <= after
    assert e.datacontenttype == "application/json"
    assert e.data == {"a": 1}


def test_create_bytes_data_has_no_implied_content_type() -> None:
    e = CloudEvent.create("t", "/s", b"\x00\x01")
    assert e.datacontenttype is None
    assert e.data == b"\x00\x01"


def test_create_keeps_given_id_time_and_extensions() -> None:
    e = CloudEvent.create("t", "/s", id="abc", time=T0, partitionkey="k", cdclsn=7)
    assert (e.id, e.time, e.extensions) == ("abc", T0, {"partitionkey": "k", "cdclsn": 7})


def test_new_id_is_uuid7_with_current_millisecond_timestamp() -> None:
    now_ms = int(_time.time() * 1000)
    u = uuid.UUID(new_id())
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    ts_ms = int(u.hex[:12], 16)  # UUIDv7: 48-bit unix milliseconds first
    assert abs(ts_ms - now_ms) < 5_000


def test_new_ids_are_unique() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000


# ------------------------------------------------------------ required attributes
@pytest.mark.parametrize("field", ["id", "source", "type"])
@pytest.mark.parametrize("bad", ["", None, 5])
def test_required_attributes_must_be_non_empty_strings(field: str, bad: object) -> None:
    with pytest.raises(InvalidEventError) as ei:
        ev(**{field: bad})
    assert ei.value.field == field


def test_only_specversion_1_0_is_accepted() -> None:
    with pytest.raises(InvalidEventError) as ei:
        ev(specversion="0.3")
    assert ei.value.field == "specversion"


@pytest.mark.parametrize("field", ["subject", "datacontenttype", "dataschema"])
@pytest.mark.parametrize("bad", ["", 3])
def test_optional_string_attributes_non_empty_when_set(field: str, bad: object) -> None:
    with pytest.raises(InvalidEventError) as ei:
        ev(**{field: bad})
    assert ei.value.field == field


# CloudEvents 1.0 type system: a String MUST NOT hold control characters (U+0000-U+001F,
# U+007F-U+009F) or surrogates; "some, such as U+000A (newline), are not usable in
# contexts such as HTTP headers".
@pytest.mark.parametrize("field", ["id", "source", "type", "datacontenttype", "dataschema"])
@pytest.mark.parametrize("bad", ["a\r\nX-Injected: 1", "tab\there", "nul\x00", "c1\x85", "\ud800"])
def test_string_attributes_refuse_control_characters(field: str, bad: str) -> None:
    with pytest.raises(InvalidEventError) as ei:
        ev(**{field: bad})
    assert ei.value.field == field
    assert "control character" in ei.value.reason


def test_create_refuses_an_id_with_cr_lf() -> None:
    with pytest.raises(InvalidEventError) as ei:
        CloudEvent.create("t", "/s", id="x\r\nSet-Cookie: a=b")
    assert ei.value.field == "id"
    # Printable Unicode (and a space) is fine: the HTTP binding percent-encodes it.
    assert ev(id="caf\u00e9 1", subject="\u00a0x").id == "caf\u00e9 1"


def test_subject_and_extensions_keep_producers_data_and_are_encoded_as_headers() -> None:
    """A CDC row's text key with a tab, a provider's subject with a newline: kept (not
    dead-lettered on decode), and percent-encoded when they become HTTP headers."""
    from eventpipe.envelope import to_http

    e = ev(subject="line\nbreak", extensions={"partitionkey": "a\tb\r\nX-Injected: 1"})
    headers, _ = to_http(e)
    assert headers["ce-subject"] == "line%0Abreak"
    assert headers["ce-partitionkey"] == "a%09b%0D%0AX-Injected:%201"


def test_naive_datetime_rejected() -> None:
    with pytest.raises(InvalidEventError) as ei:
        ev(time=datetime(2024, 1, 1, 0, 0))
    assert ei.value.field == "time"
    with pytest.raises(InvalidEventError) as ei:
        CloudEvent.create("t", "/s", time=datetime(2024, 1, 1))
    assert ei.value.field == "time"


def test_time_must_be_datetime() -> None:
    with pytest.raises(InvalidEventError) as ei:
        ev(time="2024-01-01T00:00:00Z")
    assert ei.value.field == "time"


def test_bytes_with_declared_json_content_type_rejected() -> None:
    with pytest.raises(InvalidEventError) as ei:
        ev(data=b"{}", datacontenttype="application/json")
    assert ei.value.field == "data"


# ------------------------------------------------------------------- extensions
@pytest.mark.parametrize(
    "name",
    [
        "partitionkey",
        "traceparent",
        "tracestate",
        "cdclsn",
        "a",
        "x1",
        "abcdefghijklmnopqrstuvwxyz0123",
    ],
)
def test_valid_extension_names(name: str) -> None:
    assert ev(extensions={name: "v"}).extensions == {name: "v"}


@pytest.mark.parametrize(
    "name", ["camelCase", "with-dash", "under_score", "dot.ted", "", "ümlaut", "UPPER", "sp ace"]
)
def test_invalid_extension_names_name_the_extension(name: str) -> None:
    with pytest.raises(InvalidEventError) as ei:
        ev(extensions={name: "v"})
    assert ei.value.field == name


@pytest.mark.parametrize("name", ["id", "time", "data", "specversion", "datacontenttype"])
def test_reserved_names_are_not_extensions(name: str) -> None:
    with pytest.raises(InvalidEventError) as ei:
        ev(extensions={name: "v"})
    assert ei.value.field == name


@pytest.mark.parametrize("value", [1.5, None, {"a": 1}, [1], b"x", 2**31, -(2**31) - 1])
def test_invalid_extension_values(value: object) -> None:
    with pytest.raises(InvalidEventError) as ei:
        ev(extensions={"myext": value})
    assert ei.value.field == "myext"


@pytest.mark.parametrize("value", ["s", 0, -(2**31), 2**31 - 1, True, False])
def test_valid_extension_values(value: object) -> None:
    assert ev(extensions={"myext": value}).extensions["myext"] == value


@pytest.mark.parametrize(("value", "key"), [("k", "k"), (42, "42"), (True, "true"), (None, None)])
def test_partitionkey_property_uses_canonical_string(value: object, key: str | None) -> None:
    e = ev(extensions={} if value is None else {"partitionkey": value})
    assert e.partitionkey == key


# ------------------------------------------------------------------------- time
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:30:00Z", T0),
        ("2024-05-01t12:30:00z", T0),
        ("2024-05-01T12:30:00+00:00", T0),
        ("2024-05-01T12:30:00-00:00", T0),
        ("2024-05-01T14:30:00+02:00", T0),
        ("2024-05-01T07:00:00-05:30", T0),
        ("2024-05-02T00:00:00+11:30", T0),
        ("2024-05-01T12:30:00.5Z", T0.replace(microsecond=500_000)),
        ("2024-05-01T12:30:00.123456Z", T0.replace(microsecond=123_456)),
        ("2024-05-01T12:30:00.123456789Z", T0.replace(microsecond=123_456)),
        ("2024-05-01 12:30:00Z", T0),
    ],
)
def test_parse_time_rfc3339(text: str, expected: datetime) -> None:
    got = parse_time(text)
    assert got == expected
    assert got.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2024-05-01",
        "2024-05-01T12:30:00",  # no offset: not RFC 3339
        "2024-05-01T12:30Z",
        "2024-05-01T12:30:00+0200",
        "2024-05-01T12:30:00+02",
        "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-05-01T25:00:00Z",
        "2024-05-01T12:30:00.Z",
        "2024-05-01T12:30:00Z trailing",
        "٢٠٢٤-05-01T12:30:00Z",  # non-ASCII digits
    ],
)
def test_parse_time_rejects_non_rfc3339(text: str) -> None:
    with pytest.raises(InvalidEventError) as ei:
        parse_time(text)
    assert ei.value.field == "time"


def test_parse_time_rejects_non_strings() -> None:
    with pytest.raises(InvalidEventError) as ei:
        parse_time(1714566600)  # type: ignore[arg-type]
    assert ei.value.field == "time"


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (T0, "2024-05-01T12:30:00Z"),
        (T0.replace(microsecond=1), "2024-05-01T12:30:00.000001Z"),
        (datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))), "2024-05-01T12:30:00Z"),
    ],
)
def test_format_time_is_utc_z(t: datetime, text: str) -> None:
    assert format_time(t) == text
    assert parse_time(format_time(t)) == t


def test_format_time_rejects_naive() -> None:
    with pytest.raises(InvalidEventError) as ei:
        format_time(datetime(2024, 1, 1))
    assert ei.value.field == "time"


@pytest.mark.parametrize(
    ("ct", "is_json"),
    [
        (None, True),
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("APPLICATION/JSON", True),
        ("text/json", True),
        ("application/vnd.foo+json", True),
        ("application/cloudevents+json", True),
        ("text/plain", False),
        ("application/octet-stream", False),
        ("application/json-seq", False),
        ("application/jsonx", False),
        ("application/xml", False),
    ],
)
def test_is_json_content_type(ct: str | None, is_json: bool) -> None:
    assert is_json_content_type(ct) is is_json


# ------------------------------------------------------------------ attributes
def test_attributes_and_equality_and_replace() -> None:
    e = ev(subject="s", time=T0, datacontenttype="application/json", data=[1], extensions={"n": 1})
    assert e.attributes() == {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/src",
        "type": "com.example.thing",
        "subject": "s",
        "time": "2024-05-01T12:30:00Z",
        "datacontenttype": "application/json",
        "n": 1,
    }
    assert e == ev(
        subject="s", time=T0, datacontenttype="application/json", data=[1], extensions={"n": 1}
    )
    r = e.replace(id="e-2", extensions={"m": "x"})
    assert (r.id, r.extensions, e.id) == ("e-2", {"n": 1, "m": "x"}, "e-1")
    assert r != e
    with pytest.raises(InvalidEventError):
        e.replace(source="")


# ----------------------------------------------------------------- JSON format
def full_event(**kw: object) -> CloudEvent:
    base: dict[str, object] = {
        "id": "e-1",
        "source": "/src",
        "type": "com.example.thing",
        "subject": "Ünïcode €",
        "time": T0.replace(microsecond=123_456),
        "datacontenttype": "application/json",
        "dataschema": "https://example.com/schema.json",
        "data": {"a": [1, 2.5, None, True, "x"]},
        "extensions": {"partitionkey": "k", "seq": 5, "flag": False, "traceparent": "00-ab-cd-01"},
    }
    base.update(kw)
    return CloudEvent(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "event",
    [
        full_event(),
        full_event(data=None),
        full_event(data="a JSON string"),
        full_event(data=[1, 2]),
        full_event(data=0),
        full_event(datacontenttype=None),
        full_event(datacontenttype="application/octet-stream", data=b"\x00\xff\x80"),
        full_event(datacontenttype=None, data=b"\x00\xff"),
        full_event(datacontenttype="text/plain; charset=utf-8", data="héllo".encode()),
        ev(),
    ],
    ids=lambda e: repr(e.data)[:20],
)
def test_structured_round_trip(event: CloudEvent) -> None:
    assert from_structured_dict(to_structured_dict(event)) == event
    assert decode_structured(encode_structured(event)) == event
    assert decode_structured(orjson.dumps(to_structured_dict(event))) == event


def test_structured_dict_shape() -> None:
    d = to_structured_dict(full_event())
    assert d == {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/src",
        "type": "com.example.thing",
        "subject": "Ünïcode €",
        "time": "2024-05-01T12:30:00.123456Z",
        "datacontenttype": "application/json",
        "dataschema": "https://example.com/schema.json",
        "partitionkey": "k",
        "seq": 5,
        "flag": False,
        "traceparent": "00-ab-cd-01",
        "data": {"a": [1, 2.5, None, True, "x"]},
    }
    b = to_structured_dict(full_event(datacontenttype="image/png", data=b"\x89PNG"))
    assert b["data_base64"] == base64.b64encode(b"\x89PNG").decode()
    assert "data" not in b
    assert "data" not in to_structured_dict(full_event(data=None))


def test_text_data_string_becomes_bytes() -> None:
    e = from_structured_dict(
        {
            "specversion": "1.0",
            "id": "1",
            "source": "/s",
            "type": "t",
            "datacontenttype": "application/xml",
            "data": '<much wow="xml"/>',
        }
    )
    assert e.data == b'<much wow="xml"/>'
    # str data with a text content type is written as a JSON string
    s = to_structured_dict(ev(datacontenttype="text/plain", data="hi"))
    assert s["data"] == "hi"


def test_data_base64_with_json_content_type_is_parsed() -> None:
    e = from_structured_dict(
        {
            "specversion": "1.0",
            "id": "1",
            "source": "/s",
            "type": "t",
            "datacontenttype": "application/json",
            "data_base64": base64.b64encode(b'{"a":1}').decode(),
        }
    )
    assert e.data == {"a": 1}


def test_null_attributes_are_absent() -> None:
    e = from_structured_dict(
        {
            "specversion": "1.0",
            "id": "1",
            "source": "/s",
            "type": "t",
            "subject": None,
            "time": None,
            "datacontenttype": None,
            "unsetext": None,
            "data": None,
        }
    )
    got = (e.subject, e.time, e.datacontenttype, e.extensions, e.data)
    assert got == (None, None, None, {}, None)


BASE: dict[str, object] = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": None}, "id"),
        ({"source": None}, "source"),
        ({"type": None}, "type"),
        ({"specversion": None}, "specversion"),
        ({"id": ""}, "id"),
        ({"id": 12}, "id"),
        ({"specversion": "0.3"}, "specversion"),
        ({"specversion": 1.0}, "specversion"),
        ({"time": "not a time"}, "time"),
        ({"time": "2024-05-01T12:30:00"}, "time"),
        ({"time": 1714566600}, "time"),
        ({"subject": ""}, "subject"),
        ({"subject": 1}, "subject"),
        ({"dataschema": ["x"]}, "dataschema"),
        ({"datacontenttype": 5}, "datacontenttype"),
        ({"BadName": "x"}, "BadName"),
        ({"bad-name": "x"}, "bad-name"),
        ({"myext": 1.5}, "myext"),
        ({"myext": {"a": 1}}, "myext"),
        ({"myext": 2**40}, "myext"),
        ({"data": 1, "data_base64": "AA=="}, "data_base64"),
        ({"data_base64": "***"}, "data_base64"),
        ({"data_base64": 5}, "data_base64"),
        ({"datacontenttype": "text/plain", "data": {"a": 1}}, "data"),
    ],
)
def test_from_structured_dict_errors_name_the_field(change: dict[str, object], field: str) -> None:
    d = dict(BASE)
    for k, v in change.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    with pytest.raises(InvalidEventError) as ei:
        from_structured_dict(d)
    assert ei.value.field == field


def test_from_structured_dict_rejects_non_objects() -> None:
    with pytest.raises(InvalidEventError) as ei:
        from_structured_dict([BASE])  # type: ignore[arg-type]
    assert ei.value.field == "event"


@pytest.mark.parametrize("body", [b"{", b"", b"\xff\xfe", b"[1,2]", b'"s"', b"null"])
def test_decode_structured_malformed_is_body_error(body: bytes) -> None:
    with pytest.raises(MalformedEventError) as ei:
        decode_structured(body)
    assert ei.value.field == "body"


def test_bad_json_in_data_base64_with_json_content_type() -> None:
    d = dict(BASE, datacontenttype="application/json", data_base64=base64.b64encode(b"{").decode())
    with pytest.raises(MalformedEventError) as ei:
        from_structured_dict(d)
    assert ei.value.field == "data_base64"


def test_unserializable_data_is_invalid_data() -> None:
    e = ev(data={"x": object()}, datacontenttype="application/json")
    with pytest.raises(InvalidEventError) as ei:
        encode_structured(e)
    assert ei.value.field == "data"
    with pytest.raises(InvalidEventError) as ei:
        to_structured_dict(ev(data={"a": 1}, datacontenttype="text/plain"))
    assert ei.value.field == "data"


def test_batch_round_trip_and_errors() -> None:
    events = [full_event(id=str(i)) for i in range(3)] + [
        full_event(id="b", datacontenttype="application/octet-stream", data=b"\xff")
    ]
    assert decode_batch(encode_batch(events)) == events
    assert decode_batch(b"[]") == []
    bad = orjson.dumps([BASE, BASE, dict(BASE, id=""), BASE])
    with pytest.raises(InvalidEventError) as ei:
        decode_batch(bad)
    assert ei.value.field == "[2].id"
    with pytest.raises(InvalidEventError) as ei:
        encode_batch([ev(), ev(data={"x": object()})])
    assert ei.value.field == "[1].data"
