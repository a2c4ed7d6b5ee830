"""W3C trace context from outside becomes the CloudEvents distributed-tracing
extension (``traceparent`` / ``tracestate``), with tracing off: a plain
``traceparent`` header on a webhook or publish request, or on a record the kafka
source reads, is kept on the event it becomes (real broker and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.http import to_http_batch
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.service.app import build_app
from eventpipe.service.context import open_context
from eventpipe.settings import Settings, TopicSpec
from tests.helpers import ServiceTestServer, read_events
from tests.integration.test_kafka_source import produce
from tests.integration.test_kafka_source import source as kafka_source
from tests.integration.test_webhook_source import close_hook, open_hook, standard_headers

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "vendor=abc,other=1"
OWN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STRUCTURED = {"content-type": "application/cloudevents+json"}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    ctx = await open_context(settings, broker_wait_s=5)
    c = TestClient(ServiceTestServer(build_app(ctx), settings.service))
    try:
        await c.start_server()
        yield c
    finally:
        await c.close()
        await ctx.close()


def _structured(**kw: object) -> bytes:
    event = {"specversion": "1.0", "id": "e-1", "source": "/t", "type": "t.x", "data": {"x": 1}}
    return orjson.dumps({**event, **kw})


def assert_traced(event: CloudEvent) -> None:
    assert event.extensions["traceparent"] == TRACEPARENT
    assert event.extensions["tracestate"] == TRACESTATE


async def test_a_webhook_traceparent_header_becomes_the_events_extension(
    settings: Settings, topic: str
) -> None:
    hook = await open_hook(settings, topic)
    try:
        body = orjson.dumps({"type": "invoice.paid", "n": 1})
        headers = standard_headers(body, "msg-traced")
        status, _ = await hook.post(
            body, {**headers, "traceparent": TRACEPARENT, "tracestate": TRACESTATE}
        )
        assert status == 200
        body2 = orjson.dumps({"type": "invoice.paid", "n": 2})
        status, _ = await hook.post(body2, standard_headers(body2, "msg-untraced"))
        assert status == 200
        events = {e.id: e for e in await read_events(settings.kafka.bootstrap, topic, 2)}
    finally:
        await close_hook(hook)
    assert_traced(events["msg-traced"])
    # tracing is off: an event whose request had no trace context gets none
    assert "traceparent" not in events["msg-untraced"].extensions


async def test_a_cloudevents_webhook_keeps_the_senders_own_traceparent(
    settings: Settings, topic: str
) -> None:
    hook = await open_hook(
        settings, topic, input="cloudevents", verify={"scheme": "none"}, dedup={"enabled": False}
    )
    try:
        own = CloudEvent.create("t.own", "/s", {"i": 1}, id="own", traceparent=OWN)
        plain = CloudEvent.create("t.plain", "/s", {"i": 2}, id="plain")
        headers, body = to_http_batch([own, plain])
        status, _ = await hook.post(body, {**headers, "traceparent": TRACEPARENT})
        assert status == 200
        events = {e.id: e for e in await read_events(settings.kafka.bootstrap, topic, 2)}
    finally:
        await close_hook(hook)
    assert events["own"].extensions["traceparent"] == OWN
    assert events["plain"].extensions["traceparent"] == TRACEPARENT


async def test_a_publish_request_traceparent_header_becomes_the_events_extension(
    client: TestClient, settings: Settings, topic: str
) -> None:
    r = await client.post(
        f"/v1/topics/{topic}/events",
        data=_structured(id="traced"),
        headers={**STRUCTURED, "traceparent": TRACEPARENT, "tracestate": TRACESTATE},
    )
    assert r.status == 202, await r.text()
    r = await client.post(
        f"/v1/topics/{topic}/events",
        data=_structured(id="bad"),
        headers={
            **STRUCTURED,
            "traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        },
    )  # an invalid trace id (all zeros) is ignored, as W3C says
    assert r.status == 202, await r.text()
    events = {e.id: e for e in await read_events(settings.kafka.bootstrap, topic, 2)}
    assert_traced(events["traced"])
    assert "traceparent" not in events["bad"].extensions


async def through_kafka_source(
    settings: Settings, topic: str, records: list[tuple[Any, ...]]
) -> tuple[str, list[CloudEvent]]:
    """``records`` produced to ``topic``, read by a kafka source into ``<topic>.out``:
    the source's name and the events it wrote."""
    target = f"{topic}.out"
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=target, partitions=1), f"{target}.dlq"])
    await produce(settings, topic, records)
    ctx = await open_context(settings, broker_wait_s=5)
    src = kafka_source(ctx, topic, target, name=f"ks-{uuid.uuid4().hex[:8]}")
    await src.start()
    try:
        return src.name, await read_events(settings.kafka.bootstrap, target, len(records))
    finally:
        await src.stop()
        await ctx.close()


async def test_a_kafka_record_traceparent_header_becomes_the_events_extension(
    settings: Settings, topic: str
) -> None:
    _, events = await through_kafka_source(
        settings,
        topic,
        [
            (b"k1", b'{"n": 1}', [("traceparent", TRACEPARENT.encode())]),
            (b"k2", b'{"n": 2}', [("traceparent", b"not-a-traceparent")]),
        ],
    )
    by_n = {e.data["n"]: e for e in events}
    assert by_n[1].extensions["traceparent"] == TRACEPARENT
    assert "traceparent" not in by_n[2].extensions


async def test_a_refused_webhooks_dead_letter_keeps_the_requests_trace_context(
    settings: Settings, topic: str
) -> None:
    hook = await open_hook(settings, topic, event={"type": ".body.kind"})
    try:
        body = orjson.dumps({"no": "kind"})  # the type expression gives null: 422
        headers = {**standard_headers(body, "msg-refused"), "traceparent": TRACEPARENT}
        status, problem = await hook.post(body, headers)
        assert status == 422 and problem["dead_letter"] == f"{topic}.dlq"
        [letter] = await hook.records(1, f"{topic}.dlq")
    finally:
        await close_hook(hook)
    assert dict(letter.headers)["http.traceparent"] == TRACEPARENT.encode()
