"""HTTP protocol binding (eventpipe.envelope.http)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from eventpipe.envelope import (
    BATCH_CT,
    STRUCTURED_CT,
    CloudEvent,
    from_http,
    to_http,
    to_http_batch,
)
from eventpipe.envelope.http import decode_header_value, encode_header_value
from eventpipe.errors import InvalidEventError, MalformedEventError, UnsupportedMediaTypeError

T0 = datetime(2024, 5, 1, 12, 30, 0, tzinfo=UTC)


def make(**kw: object) -> CloudEvent:
    base: dict[str, object] = {
        "id": "delivery-1",
        "source": "https://github.com/acme/repo",
        "type": "com.github.push",
        "subject": 'Euro € 😀 "quoted" 100% done',
        "time": T0,
        "datacontenttype": "application/json",
        "dataschema": "https://example.com/s.json",
        "data": {"ref": "refs/heads/main", "commits": [{"id": "abc"}]},
        "extensions": {"partitionkey": "acme/repo", "traceparent": "00-4bf92f-00f067-01"},
    }
    base.update(kw)
    return CloudEvent(**base)  # type: ignore[arg-type]


EVENTS = [
    make(),
    make(data=None),
    make(data=None, datacontenttype=None),
    make(data=["a", 1]),
    make(data="a JSON string"),
    make(datacontenttype="application/octet-stream", data=b"\x00\xff\x80"),
    make(datacontenttype=None, data=b"\xff not json"),
    make(datacontenttype="text/plain; charset=utf-8", data="Grüße".encode()),
    make(subject=None, dataschema=None, extensions={}),
    CloudEvent(id="x", source="/s", type="t"),
]
IDS = [
    "json",
    "no-data",
    "no-data-no-ct",
    "list",
    "string",
    "bytes",
    "bytes-no-ct",
    "text",
    "minimal",
    "bare",
]


@pytest.mark.parametrize("event", EVENTS, ids=IDS)
@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_round_trip(event: CloudEvent, mode: str) -> None:
    headers, body = to_http(event, mode=mode)  # type: ignore[arg-type]
    assert isinstance(body, bytes)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    assert from_http(headers, body) == [event]


def test_batch_round_trip() -> None:
    headers, body = to_http_batch(EVENTS)
    assert headers == {"content-type": BATCH_CT}
    assert from_http(headers, body) == EVENTS


def test_empty_batch() -> None:
    headers, body = to_http_batch([])
    assert body == b"[]"
    assert from_http(headers, body) == []
    assert from_http({"Content-Type": BATCH_CT + "; charset=utf-8"}, b" [ ] ") == []


def test_binary_layout() -> None:
    headers, body = to_http(make(extensions={"seq": 3, "flag": True, "partitionkey": "p"}))
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "delivery-1",
        "ce-source": "https://github.com/acme/repo",
        "ce-type": "com.github.push",
        "ce-subject": "Euro%20%E2%82%AC%20%F0%9F%98%80%20%22quoted%22%20100%25%20done",
        "ce-time": "2024-05-01T12:30:00Z",
        "ce-dataschema": "https://example.com/s.json",
        "ce-seq": "3",
        "ce-flag": "true",
        "ce-partitionkey": "p",
        "content-type": "application/json",
    }
    assert orjson.loads(body) == {"ref": "refs/heads/main", "commits": [{"id": "abc"}]}
    assert all(v.isascii() for v in headers.values())


def test_binary_no_data_is_empty_body() -> None:
    headers, body = to_http(make(data=None, datacontenttype=None))
    assert body == b""
    assert "content-type" not in headers


def test_binary_json_without_content_type_declares_json() -> None:
    headers, body = to_http(make(data={"a": 1}, datacontenttype=None))
    assert headers["content-type"] == "application/json"
    (back,) = from_http(headers, body)
    assert (back.datacontenttype, back.data) == ("application/json", {"a": 1})


def test_structured_layout() -> None:
    headers, body = to_http(make(), mode="structured")
    assert headers == {"content-type": STRUCTURED_CT}
    d = orjson.loads(body)
    assert d["subject"] == 'Euro € 😀 "quoted" 100% done'
    assert d["data"] == {"ref": "refs/heads/main", "commits": [{"id": "abc"}]}


def test_invalid_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        to_http(make(), mode="batch")  # type: ignore[arg-type]


# ----------------------------------------------------------- header encoding
@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("plain-ASCII/value:1?x=y&z#f", "plain-ASCII/value:1?x=y&z#f"),
        ("Euro € 😀", "Euro%20%E2%82%AC%20%F0%9F%98%80"),  # the spec's example
        ('say "hi"', "say%20%22hi%22"),
        ("100%", "100%25"),
        ("tab\there", "tab%09here"),
        ("del\x7f", "del%7F"),
        ("", ""),
    ],
)
def test_header_percent_encoding(raw: str, encoded: str) -> None:
    assert encode_header_value(raw) == encoded
    assert decode_header_value("subject", encoded) == raw


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        ("%e2%82%ac", "€"),  # lower-case hex accepted
        ("%41BC", "ABC"),  # unnecessary encoding accepted
        ('"quoted value"', "quoted value"),  # older senders: quoted-string
        ('"a \\"b\\" c"', 'a "b" c'),  # backslash escapes inside the quoted-string
        ("€ raw", "€ raw"),  # raw UTF-8 from lenient senders
        ("  padded  ", "padded"),
    ],
)
def test_header_decoding_leniency(wire: str, value: str) -> None:
    assert decode_header_value("subject", wire) == value


@pytest.mark.parametrize("wire", ["%C0%A0", "%FF", "%E2%82", "bad\udcff"])
def test_header_decoding_rejects_invalid_utf8(wire: str) -> None:
    with pytest.raises(MalformedEventError) as ei:
        decode_header_value("subject", wire)
    assert ei.value.field == "subject"


def test_from_http_decodes_percent_encoded_attributes() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "a%20b",
        "ce-source": "/s",
        "ce-type": "t",
        "ce-subject": "Euro%20%E2%82%AC%20%F0%9F%98%80",
        "ce-myext": "%22x%22",
    }
    (e,) = from_http(headers, b"")
    assert (e.id, e.subject, e.extensions) == ("a b", "Euro € 😀", {"myext": '"x"'})


def test_from_http_rejects_invalid_utf8_header() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "t",
        "ce-subject": "%C0%A0",
    }
    with pytest.raises(MalformedEventError) as ei:
        from_http(headers, b"")
    assert ei.value.field == "subject"


# ------------------------------------------------------------------ decoding
def binary_headers(**extra: str) -> dict[str, str]:
    h = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}
    h.update({k.replace("_", "-"): v for k, v in extra.items()})
    return h


def test_headers_case_insensitive_plain_dict_and_multidict() -> None:
    raw = {
        "CE-SpecVersion": "1.0",
        "Ce-Id": "1",
        "CE-SOURCE": "/s",
        "ce-type": "t",
        "CE-Time": "2024-05-01T14:30:00+02:00",
        "Content-Type": "application/json",
    }
    (a,) = from_http(raw, b'{"x": 1}')
    (b,) = from_http(CIMultiDictProxy(CIMultiDict(raw)), b'{"x": 1}')
    assert a == b
    assert (a.id, a.time, a.datacontenttype, a.data) == ("1", T0, "application/json", {"x": 1})


def test_binary_non_json_content_type_keeps_bytes() -> None:
    (e,) = from_http(binary_headers(content_type="image/png"), b"\x89PNG\r\n")
    assert (e.datacontenttype, e.data) == ("image/png", b"\x89PNG\r\n")
    (e,) = from_http(binary_headers(content_type="text/plain"), b"hello")
    assert e.data == b"hello"


def test_binary_without_content_type() -> None:
    (e,) = from_http(binary_headers(), b"")
    assert (e.datacontenttype, e.data) == (None, None)
    (e,) = from_http(binary_headers(), b"[1, 2]")
    assert e.data == [1, 2]
    (e,) = from_http(binary_headers(), b"\xff")
    assert e.data == b"\xff"


def test_binary_structured_content_type_wins_over_ce_headers() -> None:
    body = orjson.dumps({"specversion": "1.0", "id": "body-id", "source": "/s", "type": "t"})
    headers = binary_headers(content_type=STRUCTURED_CT + "; charset=UTF-8")
    (e,) = from_http(headers, body)
    assert e.id == "body-id"


def test_binary_bad_json_is_malformed_data() -> None:
    with pytest.raises(MalformedEventError) as ei:
        from_http(binary_headers(content_type="application/json"), b"{nope")
    assert ei.value.field == "data"


@pytest.mark.parametrize("body", [b"{nope", b"", b"[]", b"42", b"\xff"])
def test_structured_malformed_body(body: bytes) -> None:
    with pytest.raises(MalformedEventError) as ei:
        from_http({"content-type": STRUCTURED_CT}, body)
    assert ei.value.field == "body"


@pytest.mark.parametrize("body", [b"[{", b"", b"{}", b'"x"'])
def test_batch_malformed_body(body: bytes) -> None:
    with pytest.raises(MalformedEventError) as ei:
        from_http({"content-type": BATCH_CT}, body)
    assert ei.value.field == "body"


GOOD = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({k: v for k, v in GOOD.items() if k != "id"}, "[3].id"),
        (dict(GOOD, time="noon"), "[3].time"),
        (dict(GOOD, BadExt="x"), "[3].BadExt"),
        (dict(GOOD, specversion="0.3"), "[3].specversion"),
        ([GOOD], "[3]"),
        ("event", "[3]"),
    ],
)
def test_batch_element_errors_are_indexed(bad: object, field: str) -> None:
    body = orjson.dumps([GOOD, GOOD, GOOD, bad, GOOD])
    with pytest.raises(InvalidEventError) as ei:
        from_http({"content-type": BATCH_CT}, body)
    assert ei.value.field == field


def test_structured_invalid_event_names_field() -> None:
    with pytest.raises(InvalidEventError) as ei:
        from_http({"content-type": STRUCTURED_CT}, orjson.dumps(dict(GOOD, source="")))
    assert ei.value.field == "source"


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"ce-id": "1", "ce-source": "/s", "ce-type": "t"}, "specversion"),
        ({"ce-specversion": "1.0", "ce-source": "/s", "ce-type": "t"}, "id"),
        (binary_headers(ce_time="2024-05-01"), "time"),
        (binary_headers(ce_specversion="0.3"), "specversion"),
        ({**binary_headers(), "ce-my_ext": "x"}, "my_ext"),
    ],
)
def test_binary_errors_name_the_field(headers: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidEventError) as ei:
        from_http(headers, b"")
    assert ei.value.field == field


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json"},
        {"Content-Type": "text/plain", "x-other": "1"},
        {"content-type": "application/cloudevents+avro"},
        {**binary_headers(), "content-type": "application/cloudevents+protobuf"},
    ],
)
def test_unsupported_media_type(headers: dict[str, str]) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as ei:
        from_http(headers, b"{}")
    assert ei.value.accepted == [STRUCTURED_CT, BATCH_CT]
    assert ei.value.content_type == headers.get("content-type", headers.get("Content-Type", ""))
