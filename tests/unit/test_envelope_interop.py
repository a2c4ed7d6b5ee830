"""Interoperability with the official CloudEvents SDK (``cloudevents`` 2.x).

The SDK's v2 API (``cloudevents.core``) must parse everything we write, and we must
parse everything it writes, in every mode, with the same attributes and data.  The
SDK has no batch API, so batches are assembled from / split into its JSON-format
events.  A smaller set runs against the SDK's legacy ``cloudevents.v1`` API.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.bindings import kafka as sdk_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from eventpipe.envelope import (
    BATCH_CT,
    CloudEvent,
    from_http,
    from_kafka,
    to_http,
    to_http_batch,
    to_kafka,
)

FMT = JSONFormat()
T0 = datetime(2024, 5, 1, 12, 30, 0, 123_456, tzinfo=UTC)
CORE = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema"}
SUBJECT = 'Euro € 😀 "quoted" 100% done'


def canonical_string(v: object) -> str:
    """The spec's canonical string form (kept independent of the code under test)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def norm(attrs: dict[str, Any], *, strings: bool) -> dict[str, Any]:
    """Attributes for comparison: time as an aware datetime in UTC, extensions as
    canonical strings when the mode carries no types (binary)."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if k == "time":
            assert isinstance(v, datetime) and v.tzinfo is not None
            v = v.astimezone(UTC)
        elif k not in CORE and strings:
            v = canonical_string(v)
        out[k] = v
    return out


def ours_attrs(e: CloudEvent, *, strings: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "specversion": e.specversion,
        "id": e.id,
        "source": e.source,
        "type": e.type,
        "subject": e.subject,
        "time": e.time,
        "datacontenttype": e.datacontenttype,
        "dataschema": e.dataschema,
        **e.extensions,
    }
    return norm(attrs, strings=strings)


def assert_same(ours: CloudEvent, sdk: Any, *, strings: bool) -> None:
    assert ours_attrs(ours, strings=strings) == norm(sdk.get_attributes(), strings=strings)
    assert ours.data == sdk.get_data()


# ----------------------------------------------------------- eventpipe -> SDK
def our_event(**kw: Any) -> CloudEvent:
    base: dict[str, Any] = {
        "id": "evt-0001",
        "source": "/db/public/orders",
        "type": "com.example.orders.created",
        "subject": SUBJECT,
        "time": T0,
        "datacontenttype": "application/json",
        "dataschema": "https://example.com/orders.json",
        "data": {"after": {"id": 5, "note": "Grüße"}, "op": "c", "ts_ms": 1714566600123},
        "extensions": {
            "partitionkey": "order-5",
            "traceparent": "00-ab-cd-01",
            "cdclsn": "0/16B6A38",
        },
    }
    base.update(kw)
    return CloudEvent(**base)


OURS = [
    our_event(),
    our_event(data=None),
    our_event(data=[1, "two", None, 3.5]),
    our_event(data="a JSON string"),
    our_event(datacontenttype="application/octet-stream", data=b"\xff\x00\x80 not utf-8"),
    our_event(subject=None, dataschema=None, extensions={"seq": 7, "flag": True}),
    our_event(extensions={}),
]
OURS_IDS = ["json", "no-data", "json-list", "json-string", "bytes", "typed-ext", "no-key"]


@pytest.mark.parametrize("event", OURS, ids=OURS_IDS)
def test_sdk_parses_our_kafka_binary(event: CloudEvent) -> None:
    msg = to_kafka(event)
    sdk_msg = sdk_kafka.KafkaMessage(headers=dict(msg.headers), key=msg.key, value=msg.value)  # type: ignore[arg-type]
    sdk = sdk_kafka.from_kafka_event(sdk_msg)
    assert_same(event, sdk, strings=True)
    # and the explicit binary-mode reader agrees
    assert_same(event, sdk_kafka.from_binary_event(sdk_msg), strings=True)


@pytest.mark.parametrize("event", OURS, ids=OURS_IDS)
def test_sdk_parses_our_kafka_structured(event: CloudEvent) -> None:
    msg = to_kafka(event, mode="structured")
    assert msg.value is not None
    sdk_msg = sdk_kafka.KafkaMessage(headers=dict(msg.headers), key=msg.key, value=msg.value)
    assert_same(event, sdk_kafka.from_kafka_event(sdk_msg), strings=False)
    assert_same(event, sdk_kafka.from_structured_event(sdk_msg), strings=False)


@pytest.mark.parametrize("event", OURS, ids=OURS_IDS)
def test_sdk_parses_our_http_binary(event: CloudEvent) -> None:
    headers, body = to_http(event)
    sdk = sdk_http.from_http_event(sdk_http.HTTPMessage(headers=headers, body=body))
    assert_same(event, sdk, strings=True)


@pytest.mark.parametrize("event", OURS, ids=OURS_IDS)
def test_sdk_parses_our_http_structured(event: CloudEvent) -> None:
    headers, body = to_http(event, mode="structured")
    sdk = sdk_http.from_http_event(sdk_http.HTTPMessage(headers=headers, body=body))
    assert_same(event, sdk, strings=False)


def test_sdk_parses_our_http_batch() -> None:
    headers, body = to_http_batch(OURS)
    assert headers["content-type"] == BATCH_CT
    items = orjson.loads(body)
    assert isinstance(items, list) and len(items) == len(OURS)
    for ours, item in zip(OURS, items, strict=True):
        assert_same(ours, FMT.read(None, orjson.dumps(item)), strings=False)


def test_sdk_parses_our_json_data_without_content_type() -> None:
    # We add the implied application/json in binary mode (JSON format 3.1.2).
    event = our_event(datacontenttype=None)
    for sdk in (
        sdk_http.from_http_event(sdk_http.HTTPMessage(*to_http(event))),
        sdk_kafka.from_kafka_event(
            sdk_kafka.KafkaMessage(
                dict(to_kafka(event).headers), b"order-5", to_kafka(event).value or b""
            )
        ),
    ):
        assert sdk.get_datacontenttype() == "application/json"
        assert sdk.get_data() == event.data
        assert sdk.get_subject() == SUBJECT


# ----------------------------------------------------------- SDK -> eventpipe
PLUS2 = timezone(timedelta(hours=2))


def sdk_event(extra: dict[str, Any] | None = None, data: Any = "default") -> SdkEvent:
    attrs: dict[str, Any] = {
        "id": "sdk-0001",
        "source": "https://sdk.example/source",
        "type": "com.example.sdk.sent",
        "subject": SUBJECT,
        "time": datetime(2024, 5, 1, 14, 30, 0, 123_456, tzinfo=PLUS2),
        "datacontenttype": "application/json",
        "dataschema": "https://example.com/sdk.json",
        "partitionkey": "pk-1",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    attrs.update(extra or {})
    attrs = {k: v for k, v in attrs.items() if v is not None}
    return SdkEvent(attrs, {"hello": "wörld", "n": [1, 2.5, None]} if data == "default" else data)


SDKS = [
    lambda: sdk_event(),
    lambda: sdk_event(data=None),
    lambda: sdk_event({"datacontenttype": "application/octet-stream"}, b"\xff\x00\x80"),
    lambda: sdk_event(
        {"time": datetime(2024, 1, 1, tzinfo=UTC), "subject": None, "dataschema": None}
    ),
    lambda: sdk_event({"partitionkey": None, "seq": "12"}),
]
SDK_IDS = ["json", "no-data", "bytes", "minimal", "no-key"]
TYPED = lambda: sdk_event({"seq": 12, "flag": True})  # noqa: E731 - typed extensions (structured only)


@pytest.mark.parametrize("make", SDKS, ids=SDK_IDS)
def test_we_parse_sdk_kafka_binary(make: Any) -> None:
    sdk = make()
    msg = sdk_kafka.to_binary_event(sdk)
    key = msg.key.encode() if isinstance(msg.key, str) else msg.key
    ours = from_kafka(key, msg.value, list(msg.headers.items()))
    assert_same(ours, sdk, strings=True)


@pytest.mark.parametrize("make", [*SDKS, TYPED], ids=[*SDK_IDS, "typed-ext"])
def test_we_parse_sdk_kafka_structured(make: Any) -> None:
    sdk = make()
    msg = sdk_kafka.to_structured_event(sdk)
    key = msg.key.encode() if isinstance(msg.key, str) else msg.key
    ours = from_kafka(key, msg.value, list(msg.headers.items()))
    assert_same(ours, sdk, strings=False)


@pytest.mark.parametrize("make", SDKS, ids=SDK_IDS)
def test_we_parse_sdk_http_binary(make: Any) -> None:
    sdk = make()
    msg = sdk_http.to_binary_event(sdk)
    (ours,) = from_http(msg.headers, msg.body)
    assert_same(ours, sdk, strings=True)


@pytest.mark.parametrize("make", [*SDKS, TYPED], ids=[*SDK_IDS, "typed-ext"])
def test_we_parse_sdk_http_structured(make: Any) -> None:
    sdk = make()
    msg = sdk_http.to_structured_event(sdk)
    (ours,) = from_http(msg.headers, msg.body)
    assert_same(ours, sdk, strings=False)


def test_we_parse_sdk_batch() -> None:
    sdks = [make() for make in [*SDKS, TYPED]]
    body = b"[" + b",".join(FMT.write(e) for e in sdks) + b"]"
    ours = from_http({"Content-Type": BATCH_CT + "; charset=utf-8"}, body)
    assert len(ours) == len(sdks)
    for o, s in zip(ours, sdks, strict=True):
        assert_same(o, s, strings=False)


def test_sdk_json_data_without_content_type_is_json() -> None:
    # The SDK sends JSON data without a content-type header when datacontenttype is unset.
    sdk = sdk_event({"datacontenttype": None})
    for ours in (
        from_http(*_http(sdk_http.to_binary_event(sdk)))[0],
        from_kafka(b"pk-1", *_kafka(sdk_kafka.to_binary_event(sdk))),
    ):
        assert ours.datacontenttype is None
        assert ours.data == sdk.get_data()


def _http(msg: sdk_http.HTTPMessage) -> tuple[dict[str, str], bytes]:
    return msg.headers, msg.body


def _kafka(msg: sdk_kafka.KafkaMessage) -> tuple[bytes, list[tuple[str, bytes]]]:
    return msg.value, list(msg.headers.items())


# ------------------------------------------------------ SDK round trips via us
@pytest.mark.parametrize("make", SDKS, ids=SDK_IDS)
def test_sdk_event_survives_our_reencoding(make: Any) -> None:
    """SDK -> us (structured) -> re-encode in every mode -> SDK: nothing lost."""
    sdk = make()
    (ours,) = from_http(*_http(sdk_http.to_structured_event(sdk)))
    for mode in ("binary", "structured"):
        h, b = to_http(ours, mode=mode)
        assert_same(
            ours, sdk_http.from_http_event(sdk_http.HTTPMessage(h, b)), strings=mode == "binary"
        )
        m = to_kafka(ours, mode=mode)
        back = sdk_kafka.from_kafka_event(
            sdk_kafka.KafkaMessage(dict(m.headers), m.key, m.value or b"")
        )
        assert_same(ours, back, strings=mode == "binary")
    assert ours_attrs(ours, strings=False) == norm(sdk.get_attributes(), strings=False)


# ------------------------------------------------- the SDK's legacy v1 API
# cloudevents.v1 predates percent-encoding of HTTP header values and sends/reads
# them raw, so these events keep header-safe strings (no spaces, quotes, %, non-ASCII).
# Its Kafka structured mode is not the binding's (datacontenttype goes to the
# content-type header), so only Kafka binary mode is exercised.
def v1_ours() -> CloudEvent:
    return our_event(
        subject="plain-ascii-subject", extensions={"partitionkey": "order-5", "x": "y"}
    )


def v1_attrs(v1: Any) -> dict[str, Any]:
    attrs = {k: v1[k] for k in v1}
    if isinstance(attrs.get("time"), str):
        attrs["time"] = datetime.fromisoformat(attrs["time"].replace("Z", "+00:00"))
    if isinstance(attrs.get("partitionkey"), bytes):  # v1 kafka keeps the raw key
        attrs["partitionkey"] = attrs["partitionkey"].decode()
    return attrs


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_sdk_v1_http_parses_ours(mode: str) -> None:
    from cloudevents.v1.http import from_http as v1_from_http

    event = v1_ours()
    v1 = v1_from_http(*to_http(event, mode=mode))  # type: ignore[arg-type]
    assert ours_attrs(event, strings=True) == norm(v1_attrs(v1), strings=True)
    assert v1.data == event.data


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_we_parse_sdk_v1_http(mode: str) -> None:
    from cloudevents.v1.conversion import to_binary, to_structured
    from cloudevents.v1.http import CloudEvent as V1Event

    v1 = V1Event(
        {
            "type": "t.v1",
            "source": "/v1",
            "id": "v1-1",
            "time": "2024-05-01T14:30:00.5+02:00",
            "subject": "plain",
            "datacontenttype": "application/json",
            "myext": "v",
        },
        {"a": [1, 2]},
    )
    headers, body = (to_binary if mode == "binary" else to_structured)(v1)
    (ours,) = from_http(headers, body)
    assert ours_attrs(ours, strings=True) == norm(v1_attrs(v1), strings=True)
    assert ours.data == v1.data


def test_sdk_v1_kafka_binary_both_ways() -> None:
    from cloudevents.v1 import kafka as v1_kafka
    from cloudevents.v1.http import CloudEvent as V1Event

    event = v1_ours()
    msg = to_kafka(event)
    v1 = v1_kafka.from_binary(v1_kafka.KafkaMessage(dict(msg.headers), msg.key, msg.value or b""))
    assert ours_attrs(event, strings=True) == norm(v1_attrs(v1), strings=True)
    assert v1.data == event.data

    v1 = V1Event(
        {
            "type": "t.v1",
            "source": "/v1",
            "id": "v1-1",
            "time": "2024-05-01T12:30:00Z",
            "datacontenttype": "application/json",
            "partitionkey": "pk",
            "myext": "v",
        },
        {"a": 1},
    )
    m = v1_kafka.to_binary(v1)
    key = m.key.encode() if isinstance(m.key, str) else m.key
    assert isinstance(m.value, bytes)
    ours = from_kafka(key, m.value, list(m.headers.items()))
    assert ours_attrs(ours, strings=True) == norm(v1_attrs(v1), strings=True)
    assert ours.data == v1.data


@pytest.mark.parametrize(
    "ct", ["application/cloudevents+json", "Application/CloudEvents+JSON; charset=utf-8"]
)
def test_data_typed_as_a_cloudevent_cannot_pose_as_the_event(ct: str) -> None:
    """An event whose datacontenttype says "CloudEvent" cannot travel in binary mode:
    every reader would take its data for the event (a sender-chosen id, source and
    type).  Such an event is written in structured mode, so every reader agrees."""
    inner = {"specversion": "1.0", "id": "evil", "source": "/evil", "type": "evil.type"}
    event = CloudEvent.create("real.type", "/real", inner, id="real-1", datacontenttype=ct)
    msg = to_kafka(event)
    ours = from_kafka(msg.key, msg.value, msg.headers)
    sdk = sdk_kafka.from_kafka_event(
        sdk_kafka.KafkaMessage(headers=dict(msg.headers), key=msg.key, value=msg.value)
    )
    headers, body = to_http(event)
    ours_http = from_http(headers, body)[0]
    sdk_h = sdk_http.from_http_event(sdk_http.HTTPMessage(headers=headers, body=body))
    for got in (ours, ours_http):
        assert (got.id, got.source, got.type) == ("real-1", "/real", "real.type")
        assert got.data == inner
    for sdk_event in (sdk, sdk_h):
        assert (sdk_event.get_id(), sdk_event.get_source(), sdk_event.get_type()) == (
            "real-1",
            "/real",
            "real.type",
        )
