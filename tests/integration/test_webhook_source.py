"""POST /webhooks/{name} against the real broker and PostgreSQL.

Every scheme is signed by an independent implementation; every refusal is checked
for its status, its problem JSON and that nothing reached the topic (a valid
sentinel request is sent after the refusals, and the topic must hold only it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from cloudevents.core.bindings import kafka as sdk_kafka
from standardwebhooks import Webhook

from eventpipe.connectors.webhook.source import WebhookSource
from eventpipe.context import Context
from eventpipe.dlq.record import DeadLetter
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.http import to_http, to_http_batch
from eventpipe.envelope.kafka import from_kafka
from eventpipe.schema_registry.models import Schema
from eventpipe.schema_registry.registry import SchemaRegistry
from eventpipe.service.app import build_app
from eventpipe.service.catalog import CATALOG
from eventpipe.service.config import parse_sources
from eventpipe.service.context import open_context
from eventpipe.settings import Settings
from tests.helpers import ServiceTestServer, read_records

WHSEC = "whsec_" + base64.b64encode(b"integration-test-key-0123456789").decode()
WHSEC_OLD = "whsec_" + base64.b64encode(b"the-previous-key-9876543210abcd").decode()
STRIPE = "whsec_stripe_integration"
GITHUB = "gh-integration-secret"
HMAC_SECRET = "acme-secret"
INVOICE = {"type": "invoice.paid", "data": {"customer": "cus_1", "amount": 1250}}


# ---------------------------------------------------------------- signing
def standard_headers(body: bytes, msg_id: str, secret: str = WHSEC, ts: float | None = None):
    ts = time.time() if ts is None else ts
    sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(ts)),
        "webhook-signature": sig,
        "content-type": "application/json",
    }


def raw_standard_headers(body: bytes, msg_id: str, secret: str = WHSEC) -> dict[str, str]:
    """For bodies the library cannot sign (invalid UTF-8): the documented algorithm."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    ts = str(int(time.time()))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


def stripe_headers(body: bytes, secret: str = STRIPE) -> dict[str, str]:
    ts = int(time.time())
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={mac}", "content-type": "application/json"}


def github_headers(body: bytes, delivery: str, event: str = "push") -> dict[str, str]:
    mac = hmac.new(GITHUB.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={mac}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": event,
        "content-type": "application/json",
    }


# ------------------------------------------------------------------ setup
@dataclass
class Hook:
    client: TestClient
    ctx: Context
    source: WebhookSource
    name: str
    topic: str
    settings: Settings

    @property
    def path(self) -> str:
        return f"/webhooks/{self.name}"

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        r = await self.client.post(self.path, data=body, headers=headers)
        payload = await r.read()
        return r.status, (orjson.loads(payload) if payload else {})

    async def records(self, expected: int, topic: str | None = None) -> list[Any]:
        return await read_records(self.settings.kafka.bootstrap, topic or self.topic, expected)


def source_settings(settings: Settings, topic: str, name: str, **cfg: Any) -> Settings:
    entry: dict[str, Any] = {
        "type": "webhook",
        "name": name,
        "topic": topic,
        "verify": {"scheme": "standard-webhooks", "secrets": [WHSEC]},
    }
    entry.update(cfg)
    assert parse_sources([entry])[1] == []
    kafka = settings.kafka.model_copy(update={"auto_create_topics": True})
    return settings.model_copy(update={"sources": [entry], "kafka": kafka})


async def open_hook(settings: Settings, topic: str, name: str | None = None, **cfg: Any) -> Hook:
    name = name or f"wh-{uuid.uuid4().hex[:10]}"
    s = source_settings(settings, topic, name, **cfg)
    ctx = await open_context(s, broker_wait_s=5)
    (entry,), _ = parse_sources(s.sources)
    source = CATALOG.sources["webhook"].build(entry, entry.name, ctx)
    assert isinstance(source, WebhookSource)
    try:
        await source.start()  # as the service starts its components, before HTTP
        client = TestClient(ServiceTestServer(build_app(ctx, components=[source]), s.service))
    except BaseException:
        await source.stop()
        await ctx.close()
        raise
    try:
        await client.start_server()
    except BaseException:
        await client.close()
        await source.stop()
        await ctx.close()
        raise
    return Hook(client, ctx, source, name, topic, s)


async def close_hook(hook: Hook) -> None:
    await hook.client.close()  # drains HTTP first, as the service does
    await hook.source.stop()
    await hook.ctx.close()


HookFactory = Callable[..., Any]


@pytest.fixture
async def make_hook(settings: Settings, topic: str) -> AsyncIterator[HookFactory]:
    opened: list[Hook] = []

    async def make(**cfg: Any) -> Hook:
        hook = await open_hook(settings, topic, **cfg)
        opened.append(hook)
        return hook

    yield make
    for hook in opened:
        await close_hook(hook)


# ------------------------------------------------------------- accepted
async def test_standard_webhooks_stored_with_what_rechecks_the_signature(make_hook):
    hook = await make_hook(
        event={"subject": ".body.data.customer", "partitionkey": ".body.data.customer"}
    )
    body = b'{"type": "invoice.paid",   "data": {"customer": "cus_1", "amount": 1250}}'
    msg_id = f"msg_{uuid.uuid4().hex}"
    status, answer = await hook.post(body, standard_headers(body, msg_id))
    assert status == 200, answer
    assert answer == {"status": "stored", "ids": [msg_id]}
    [rec] = await hook.records(1)
    assert rec.value == body  # byte for byte
    assert rec.key == b"cus_1"
    ev = from_kafka(rec.key, rec.value, list(rec.headers))
    assert ev.id == msg_id and ev.type == "invoice.paid" and ev.subject == "cus_1"
    assert ev.source == f"/webhooks/{hook.name}"
    assert ev.data == orjson.loads(body)
    # the stored event is enough to verify the delivery again, with the library
    Webhook(WHSEC).verify(
        rec.value,
        {
            "webhook-id": ev.id,
            "webhook-timestamp": str(ev.extensions["whtimestamp"]),
            "webhook-signature": str(ev.extensions["whsignature"]),
        },
    )
    assert ev.extensions["whdigest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    # and the official SDK reads the record
    sdk = sdk_kafka.from_kafka_event(
        sdk_kafka.KafkaMessage(headers=dict(rec.headers), key=rec.key, value=rec.value)
    )
    assert sdk.get_id() == msg_id


async def test_stripe_github_and_hmac_sources(settings: Settings, topic: str):
    hooks = []
    try:
        stripe = await open_hook(settings, topic, verify={"scheme": "stripe", "secrets": [STRIPE]})
        hooks.append(stripe)
        body = orjson.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "charge.succeeded"})
        status, answer = await stripe.post(body, stripe_headers(body))
        assert status == 200, answer

        gh = await open_hook(settings, topic, verify={"scheme": "github", "secrets": [GITHUB]})
        hooks.append(gh)
        delivery = str(uuid.uuid4())
        gbody = orjson.dumps({"action": "opened", "number": 7})
        status, answer = await gh.post(gbody, github_headers(gbody, delivery, "pull_request"))
        assert status == 200, answer

        acme = await open_hook(
            settings,
            topic,
            verify={
                "scheme": "hmac",
                "secrets": [HMAC_SECRET],
                "header": "X-Acme-Signature",
                "encoding": "base64",
                "id_header": "X-Acme-Delivery",
            },
            event={"type": '"acme.order"', "subject": ".body.order"},
        )
        hooks.append(acme)
        abody = b'{"order": "o-9"}'
        mac = base64.b64encode(hmac.new(HMAC_SECRET.encode(), abody, hashlib.sha256).digest())
        status, answer = await acme.post(
            abody,
            {
                "X-Acme-Signature": mac.decode(),
                "X-Acme-Delivery": "acme-1",
                "content-type": "application/json",
            },
        )
        assert status == 200, answer

        events = {
            e.type: e
            for e in (from_kafka(r.key, r.value, list(r.headers)) for r in await stripe.records(3))
        }
        assert events["charge.succeeded"].id == orjson.loads(body)["id"]
        assert events["github.pull_request"].id == delivery
        assert events["acme.order"].id == "acme-1" and events["acme.order"].subject == "o-9"
    finally:
        for h in hooks:
            await close_hook(h)


async def test_rotated_secrets_accept_old_and_new(make_hook):
    hook = await make_hook(verify={"scheme": "standard-webhooks", "secrets": [WHSEC, WHSEC_OLD]})
    for secret in (WHSEC_OLD, WHSEC):
        body = orjson.dumps(INVOICE)
        status, _ = await hook.post(body, standard_headers(body, uuid.uuid4().hex, secret))
        assert status == 200
    assert len(await hook.records(2)) == 2


# ------------------------------------------------------------- refusals
def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


REFUSALS: list[tuple[str, Callable[[], tuple[bytes, dict[str, str]]], int, str | None]] = [
    (
        "wrong secret",
        lambda: (b"{}", standard_headers(b"{}", "r1", WHSEC_OLD)),
        401,
        "bad-signature",
    ),
    (
        "stale",
        lambda: (b"{}", standard_headers(b"{}", "r2", ts=time.time() - 600)),
        401,
        "stale-timestamp",
    ),
    (
        "future",
        lambda: (b"{}", standard_headers(b"{}", "r3", ts=time.time() + 600)),
        401,
        "future-timestamp",
    ),
    (
        "missing signature",
        lambda: (
            b"{}",
            {k: v for k, v in standard_headers(b"{}", "r4").items() if k != "webhook-signature"},
        ),
        401,
        "missing-header",
    ),
    (
        "missing id",
        lambda: (
            b"{}",
            {k: v for k, v in standard_headers(b"{}", "r5").items() if k != "webhook-id"},
        ),
        401,
        "missing-header",
    ),
    (
        "truncated signature",
        lambda: (
            b"{}",
            {
                **standard_headers(b"{}", "r6"),
                "webhook-signature": standard_headers(b"{}", "r6")["webhook-signature"][:-6],
            },
        ),
        401,
        "bad-signature",
    ),
    ("not JSON", lambda: (b"not json", standard_headers(b"not json", "r7")), 400, None),
    ("deeply nested", lambda: (_deep(2000), standard_headers(_deep(2000), "r8")), 400, None),
    (
        "invalid UTF-8",
        lambda: (b'{"a": "\xff\xfe"}', raw_standard_headers(b'{"a": "\xff\xfe"}', "r9")),
        400,
        None,
    ),
    (
        "form body",
        lambda: (
            b"a=1",
            {
                **standard_headers(b"a=1", "r10"),
                "content-type": "application/x-www-form-urlencoded",
            },
        ),
        415,
        None,
    ),
    (
        "too large",
        lambda: (b"{" + b" " * 5000 + b"}", standard_headers(b"{" + b" " * 5000 + b"}", "r11")),
        413,
        None,
    ),
]


async def test_refusals_answer_problem_json_and_store_nothing(make_hook):
    hook = await make_hook(max_body_bytes=4096)
    for label, make, status, reason in REFUSALS:
        body, headers = make()
        got, problem = await hook.post(body, headers)
        assert got == status, (label, problem)
        assert problem["status"] == status and problem["type"].startswith("urn:eventpipe:problem:")
        assert problem["detail"] and problem["source"] == hook.name
        if reason:
            assert problem["errors"][0]["reason"] == reason, label
        text = orjson.dumps(problem).decode()
        assert "v1," not in text and WHSEC not in text  # no signature or secret echoed
    sentinel = orjson.dumps(INVOICE)
    status, _ = await hook.post(sentinel, standard_headers(sentinel, "sentinel-" + hook.name))
    assert status == 200
    records = await hook.records(1)
    assert [r.value for r in records] == [sentinel]
    metrics = await (await hook.client.get("/metrics")).text()
    for reason in ("bad-signature", "stale-timestamp", "future-timestamp", "missing-header"):
        assert f'source="{hook.name}"' in metrics and f'reason="{reason}"' in metrics
    assert f'eventpipe_webhook_requests_total{{source="{hook.name}",status="401"}} 6.0' in metrics
    assert f'eventpipe_ingest_seconds_count{{source="{hook.name}"}} 1.0' in metrics
    # the one stored request's waits: its dedup check and the broker's acknowledgement
    for stage in ("dedup", "produce"):
        sample = f'eventpipe_webhook_stage_seconds_count{{source="{hook.name}",stage="{stage}"}}'
        assert f"{sample} 1.0" in metrics, stage


async def test_unauthenticated_refusals_are_not_dead_lettered_by_default(make_hook):
    hook = await make_hook()
    status, _ = await hook.post(b"{}", standard_headers(b"{}", "x", WHSEC_OLD))
    assert status == 401
    assert await hook.records(0, topic=f"{hook.topic}.dlq") == []


# ------------------------------------------------------------ duplicates
async def test_redelivery_produces_once(make_hook, settings: Settings):
    hook = await make_hook()
    body = orjson.dumps(INVOICE)
    msg_id = f"msg_{uuid.uuid4().hex}"
    # a provider retries with a fresh timestamp and signature each time
    first = await hook.post(body, standard_headers(body, msg_id))
    assert first == (200, {"status": "stored", "ids": [msg_id]})
    again = await asyncio.gather(
        *(hook.post(body, standard_headers(body, msg_id)) for _ in range(5))
    )
    assert all(a == (200, {"status": "duplicate", "ids": [msg_id]}) for a in again)
    # concurrent first deliveries of another id: one is produced
    other = f"msg_{uuid.uuid4().hex}"
    burst = await asyncio.gather(
        *(hook.post(body, standard_headers(body, other)) for _ in range(6))
    )
    assert sorted(a[1]["status"] for a in burst) == ["duplicate"] * 5 + ["stored"]
    # another instance (nothing in memory) still knows both ids, from Postgres
    await asyncio.sleep(0.3)  # the background insert of the ids
    twin = await open_hook(settings, hook.topic, name=hook.name)
    try:
        for mid in (msg_id, other):
            assert await twin.post(body, standard_headers(body, mid)) == (
                200,
                {"status": "duplicate", "ids": [mid]},
            )
    finally:
        await close_hook(twin)
    ids = [from_kafka(r.key, r.value, list(r.headers)).id for r in await hook.records(2)]
    assert sorted(ids) == sorted([msg_id, other])
    metrics = await (await hook.client.get("/metrics")).text()
    assert f'eventpipe_webhook_dedup_hits_total{{source="{hook.name}"}} 12.0' in metrics


# ---------------------------------------------------------------- status
async def test_status_reports_what_the_source_did(make_hook):
    hook = await make_hook(validate={"schema": SCHEMA})
    bodies = [orjson.dumps({**INVOICE, "n": i}) for i in range(5)]
    ids = [f"msg_{uuid.uuid4().hex}" for _ in bodies]
    for body, msg_id in zip(bodies, ids, strict=True):
        assert (await hook.post(body, standard_headers(body, msg_id)))[0] == 200
    assert (await hook.post(bodies[0], standard_headers(bodies[0], ids[0])))[1]["status"] == (
        "duplicate"
    )
    bad = orjson.dumps({"type": "x"})
    assert (await hook.post(bad, standard_headers(bad, "m-bad")))[0] == 422  # dead-lettered
    assert (await hook.post(bad, standard_headers(bad, "m-sig", WHSEC_OLD)))[0] == 401
    await hook.records(1, topic=f"{hook.topic}.dlq")

    st = hook.source.status()
    # six events reached the store step (one a duplicate), five were stored
    assert (st.name, st.kind, st.type, st.state) == (hook.name, "source", "webhook", "running")
    assert (st.total_in, st.total_out) == (6, 5)
    assert st.rate_in > 0 and st.rate_out > 0
    assert st.dead_letters == {"source": 1}
    assert st.details["refused"] == {"401": 1, "422": 1} and st.details["in_flight"] == 0
    assert st.last_error is None  # refusals are the sender's errors, not the source's
    assert orjson.loads(orjson.dumps(st.to_dict()))["total_out"] == 5
    ready = await (await hook.client.get("/readyz")).json()
    assert ready["checks"][f"source:{hook.name}"] == "ok"
    await hook.client.close()
    await hook.source.stop()
    assert hook.source.status().state == "stopped"


# -------------------------------------------------------- schema and DLQ
SCHEMA = {
    "type": "object",
    "required": ["type", "data"],
    "properties": {
        "data": {"type": "object", "properties": {"amount": {"type": "integer", "minimum": 0}}}
    },
}


async def test_schema_violation_is_422_and_dead_lettered(make_hook):
    hook = await make_hook(validate={"schema": SCHEMA})
    bad = orjson.dumps({"type": "invoice.paid", "data": {"amount": -5}})
    msg_id = f"bad-{uuid.uuid4().hex}"
    headers = standard_headers(bad, msg_id)
    status, problem = await hook.post(bad, headers)
    assert status == 422, problem
    assert problem["type"] == "urn:eventpipe:problem:schema-violation"
    assert problem["errors"][0]["field"] == "$.data.amount"
    assert "minimum" in problem["errors"][0]["reason"]
    assert problem["dead_letter"] == f"{hook.topic}.dlq"
    good = orjson.dumps(INVOICE)
    assert (await hook.post(good, standard_headers(good, f"good-{msg_id}")))[0] == 200
    [rec] = await hook.records(1, topic=f"{hook.topic}.dlq")
    letter = DeadLetter.from_kafka(rec.key, rec.value, list(rec.headers))
    assert letter.value == bad and letter.stage == "source" and letter.pipeline == hook.name
    assert letter.step == "schema"
    h = dict(letter.headers)
    assert h["ce_id"] == msg_id.encode()  # replay keeps the event id
    assert h["http.webhook-signature"] == b"[redacted]"
    assert h["http.webhook-id"] == msg_id.encode()
    assert [r.value for r in await hook.records(1)] == [good]


async def test_schema_from_the_registry_subject(make_hook, settings: Settings):
    subject = f"wh-{uuid.uuid4().hex[:8]}-value"
    ctx = await open_context(settings, broker_wait_s=5)
    try:
        assert ctx.pool is not None
        await SchemaRegistry(ctx.pool).register(
            subject, Schema(orjson.dumps(SCHEMA).decode(), "JSON")
        )
    finally:
        await ctx.close()
    hook = await make_hook(validate=subject)
    bad = orjson.dumps({"type": "x"})
    status, problem = await hook.post(bad, standard_headers(bad, uuid.uuid4().hex))
    assert status == 422 and problem["errors"][0]["reason"].startswith("required")
    ok = orjson.dumps(INVOICE)
    assert (await hook.post(ok, standard_headers(ok, uuid.uuid4().hex)))[0] == 200


async def test_mapping_failure_is_422(make_hook):
    hook = await make_hook(event={"type": ".body.kind"})
    body = orjson.dumps(INVOICE)
    status, problem = await hook.post(body, standard_headers(body, uuid.uuid4().hex))
    assert status == 422 and problem["errors"][0]["field"] == "type"
    assert await hook.records(0) == []


# ----------------------------------------------------------------- limits
async def test_rate_limit_429_with_retry_after(make_hook):
    hook = await make_hook(rate_limit={"per_second": 0.01, "burst": 2})
    body = orjson.dumps(INVOICE)
    answers = [
        await hook.client.post(
            hook.path, data=body, headers=standard_headers(body, uuid.uuid4().hex)
        )
        for _ in range(3)
    ]
    assert [r.status for r in answers] == [200, 200, 429]
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert (await answers[2].json())["type"].endswith("rate-limited")
    for r in answers:
        r.release()


async def _slow_body(gate: asyncio.Event) -> AsyncIterator[bytes]:
    yield b'{"type": "slow",'
    await gate.wait()
    yield b' "data": {}}'


async def test_concurrency_cap_503_and_request_timeout(make_hook):
    hook = await make_hook(
        max_concurrency=1, request_timeout_s=1.0, publish_timeout_s=0.5, dedup={"timeout_s": 0.3}
    )
    gate = asyncio.Event()
    body = orjson.dumps(INVOICE)
    slow = asyncio.ensure_future(
        hook.client.post(
            hook.path,
            data=_slow_body(gate),
            headers=standard_headers(body, uuid.uuid4().hex),
        )
    )
    await asyncio.sleep(0.2)  # the slow request holds the only slot
    status, problem = await hook.post(body, standard_headers(body, uuid.uuid4().hex))
    assert status == 503 and problem["type"].endswith("overloaded")
    timed_out = await slow  # never sends the rest within request_timeout_s
    assert timed_out.status == 503
    assert (await timed_out.json())["type"].endswith("timeout")
    gate.set()
    assert await hook.records(0) == []


# ------------------------------------------------------------- cloudevents
async def test_cloudevents_binding_input(make_hook):
    hook = await make_hook(input="cloudevents", verify={"scheme": "none"})
    one = CloudEvent.create("com.acme.one", "/acme", {"n": 1}, id=f"a-{uuid.uuid4().hex}")
    two = CloudEvent.create("com.acme.two", "/acme", {"n": 2}, id=f"b-{uuid.uuid4().hex}")
    three = CloudEvent.create("com.acme.three", "/acme", {"n": 3}, id=f"c-{uuid.uuid4().hex}")
    for headers, body in (
        to_http(one),
        to_http(two, mode="structured"),
        to_http_batch([three, one]),
    ):
        status, answer = await hook.post(body, headers)
        assert status == 200, answer
    got = [from_kafka(r.key, r.value, list(r.headers)) for r in await hook.records(3)]
    assert sorted(e.id for e in got) == sorted([one.id, two.id, three.id])  # `one` once
    assert all(e.source == "/acme" and "whdigest" in e.extensions for e in got)
    status, problem = await hook.post(b"{}", {"content-type": "text/plain"})
    assert status == 415, problem


@pytest.mark.parametrize(
    "content_type",
    [
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/vnd.acme+json; charset=utf-8",
        "application/json",
    ],
)
async def test_a_json_source_records_json_whatever_content_type_was_sent(
    make_hook, content_type: str
):
    """The sender does not choose how its event is read: the record's content type is
    the source's (JSON), so eventpipe's reader and the SDK see the same attributes."""
    hook = await make_hook()
    body = orjson.dumps(
        {
            "specversion": "1.0",
            "id": "sender-chosen",
            "source": "/elsewhere",
            "type": "invoice.paid",
            "data": {"amount": 1},
        }
    )
    msg_id = f"msg_{uuid.uuid4().hex}"
    status, answer = await hook.post(
        body, {**standard_headers(body, msg_id), "content-type": content_type}
    )
    assert status == 200, answer
    [rec] = await hook.records(1)
    assert dict(rec.headers)["content-type"] == b"application/json"
    ours = from_kafka(rec.key, rec.value, list(rec.headers))
    sdk = sdk_kafka.from_kafka_event(
        sdk_kafka.KafkaMessage(headers=dict(rec.headers), key=rec.key, value=rec.value)
    )
    expected = (msg_id, f"/webhooks/{hook.name}", "invoice.paid")
    assert (ours.id, ours.source, ours.type) == expected
    assert (sdk.get_id(), sdk.get_source(), sdk.get_type()) == expected
    assert ours.data == orjson.loads(body) == sdk.get_data()
    assert rec.value == body  # body: raw keeps the bytes
