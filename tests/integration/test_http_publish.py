"""POST /v1/topics/{topic}/events against the real broker and database."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from eventpipe.context import Context
from eventpipe.embedded.broker import EmbeddedBroker
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.http import to_http, to_http_batch
from eventpipe.service.app import build_app
from eventpipe.service.context import open_context
from eventpipe.settings import Settings
from tests.helpers import read_events

STRUCTURED = {"content-type": "application/cloudevents+json"}


async def _client(settings: Settings) -> tuple[TestClient, Context]:
    ctx = await open_context(settings, broker_wait_s=5)
    client = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    return client, ctx


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    c, ctx = await _client(settings)
    try:
        yield c
    finally:
        await c.close()
        await ctx.close()


def _event(**kw: object) -> dict:
    base = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/test",
        "type": "t.created",
        "data": {"x": 1},
    }
    base.update(kw)
    return base


async def test_structured_is_accepted_after_ack(
    client: TestClient, settings: Settings, topic: str
) -> None:
    r = await client.post(
        f"/v1/topics/{topic}/events", data=orjson.dumps(_event()), headers=STRUCTURED
    )
    assert r.status == 202, await r.text()
    body = await r.json()
    assert body["accepted"] == 1 and body["events"][0]["id"] == "e-1"
    [ev] = await read_events(settings.kafka.bootstrap, topic, 1)
    assert ev.id == "e-1" and ev.data == {"x": 1} and ev.source == "/test"


async def test_binary_mode_keeps_attributes_and_data(
    client: TestClient, settings: Settings, topic: str
) -> None:
    sent = CloudEvent.create("t.bin", "/bin", {"k": [1, 2]}, subject="s1", partitionkey="p9")
    headers, body = to_http(sent, mode="binary")
    r = await client.post(f"/v1/topics/{topic}/events", data=body, headers=headers)
    assert r.status == 202, await r.text()
    [ev] = await read_events(settings.kafka.bootstrap, topic, 1)
    assert ev == sent


async def test_batch(client: TestClient, settings: Settings, topic: str) -> None:
    events = [CloudEvent.create("t", "/b", {"i": i}) for i in range(50)]
    headers, body = to_http_batch(events)
    r = await client.post(f"/v1/topics/{topic}/events", data=body, headers=headers)
    assert r.status == 202
    assert (await r.json())["accepted"] == 50
    got = await read_events(settings.kafka.bootstrap, topic, 50)
    assert sorted(e.id for e in got) == sorted(e.id for e in events)


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        (b"{not json", STRUCTURED, 400, "body"),
        (orjson.dumps(_event(id=None)), STRUCTURED, 422, "id"),
        (orjson.dumps(_event(time="yesterday")), STRUCTURED, 422, "time"),
        (orjson.dumps(_event(**{"Bad-Ext": "x"})), STRUCTURED, 422, "Bad-Ext"),
        (
            orjson.dumps([_event(), _event(source="")]),
            {"content-type": "application/cloudevents-batch+json"},
            422,
            "[1].source",
        ),
        (b"hello", {"content-type": "text/plain"}, 415, "content-type"),
    ],
)
async def test_bad_requests_are_problem_json_naming_the_field(
    client: TestClient,
    settings: Settings,
    topic: str,
    body: bytes,
    headers: dict,
    status: int,
    field: str,
) -> None:
    r = await client.post(f"/v1/topics/{topic}/events", data=body, headers=headers)
    assert r.status == status
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = await r.json()
    assert problem["status"] == status and problem["detail"]
    assert problem["errors"][0]["field"] == field
    # Nothing was half-applied: the topic stays empty.
    assert await read_events(settings.kafka.bootstrap, topic, 0, timeout=1) == []


async def test_too_large(settings: Settings, topic: str) -> None:
    small = settings.model_copy(
        update={"service": settings.service.model_copy(update={"max_body_bytes": 200})}
    )
    c, ctx = await _client(small)
    try:
        r = await c.post(
            f"/v1/topics/{topic}/events",
            data=orjson.dumps(_event(data={"x": "y" * 500})),
            headers=STRUCTURED,
        )
        assert r.status == 413
        assert (await r.json())["errors"][0]["field"] == "body"
    finally:
        await c.close()
        await ctx.close()


async def test_unknown_topic_is_404_unless_auto_create(settings: Settings, topic_name: str) -> None:
    c, ctx = await _client(settings)
    try:
        r = await c.post(
            f"/v1/topics/{topic_name}/events", data=orjson.dumps(_event()), headers=STRUCTURED
        )
        assert r.status == 404
        assert (await r.json())["errors"][0]["field"] == "topic"
        assert not await ctx.admin.exists(topic_name)
        r = await c.post(
            "/v1/topics/bad%20name/events", data=orjson.dumps(_event()), headers=STRUCTURED
        )
        assert r.status == 400
    finally:
        await c.close()
        await ctx.close()
    auto = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"auto_create_topics": True})}
    )
    c, ctx = await _client(auto)
    try:
        r = await c.post(
            f"/v1/topics/{topic_name}/events", data=orjson.dumps(_event()), headers=STRUCTURED
        )
        assert r.status == 202
    finally:
        await c.close()
        await ctx.close()
    [ev] = await read_events(settings.kafka.bootstrap, topic_name, 1)
    assert ev.id == "e-1"


async def test_health_ready_metrics(client: TestClient, topic: str) -> None:
    assert (await client.get("/healthz")).status == 200
    r = await client.get("/readyz")
    assert r.status == 200
    assert (await r.json())["checks"] == {"broker": "ok", "database": "ok"}
    await client.post(f"/v1/topics/{topic}/events", data=orjson.dumps(_event()), headers=STRUCTURED)
    text = await (await client.get("/metrics")).text()
    assert f'eventpipe_events_published_total{{topic="{topic}"}}' in text
    assert 'eventpipe_http_requests_total{method="POST",route="publish",status="202"}' in text
    assert "eventpipe_http_request_seconds_bucket" in text
    r = await client.get("/no/such/route")
    assert r.status == 404 and r.headers["content-type"].startswith("application/problem+json")


async def test_broker_down_gives_503_never_202(settings: Settings) -> None:
    broker = EmbeddedBroker(Path(tempfile.mkdtemp(prefix="ep-broker-")), 0)
    broker.start()
    s = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={
                    "bootstrap": broker.bootstrap,
                    "request_timeout_ms": 1500,
                    "auto_create_topics": True,
                }
            ),
            "service": settings.service.model_copy(update={"publish_timeout_s": 3}),
        }
    )
    c, ctx = await _client(s)
    try:
        r = await c.post("/v1/topics/up/events", data=orjson.dumps(_event()), headers=STRUCTURED)
        assert r.status == 202
        broker.stop()
        for i in range(3):
            r = await c.post(
                "/v1/topics/up/events", data=orjson.dumps(_event(id=f"d{i}")), headers=STRUCTURED
            )
            assert r.status == 503, await r.text()
            assert int(r.headers["Retry-After"]) >= 1
            assert (await r.json())["type"].endswith("broker-unavailable")
        ready = await c.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["checks"]["broker"].startswith("unavailable")
    finally:
        await c.close()
        await ctx.close()
        broker.stop()
