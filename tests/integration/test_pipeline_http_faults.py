"""The http sink against a scripted receiver (tests/integration/http_receiver.py):
failures a real endpoint produces that the plain 5xx / 4xx / down cases of
test_pipeline_http.py do not cover, each checked through a real pipeline (broker,
dead-letter topic) unless it needs only the sink and the receiver."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from typing import Any

from prometheus_client import REGISTRY

from eventpipe.connectors.sinks.http import HttpSink, HttpSinkConfig
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.errors import InvalidEventError
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings, TopicSpec
from eventpipe.sink import DeliveryItem
from tests.helpers import read_records
from tests.integration.http_receiver import (
    HANG,
    Request,
    answer,
    garbage,
    http_date,
    receiving,
    truncated_2xx,
)
from tests.integration.test_pipeline_http import wait_until
from tests.integration.test_pipeline_support import dlq_headers, ident, running, with_pipelines


def hook_pipeline(
    name: str, url: str, *, retry: dict[str, Any] | None = None, **sink: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "sinks": [{"http": {"url": url, "timeout": "2s", "concurrency": 8, **sink}}],
        "retry": {"max_attempts": 3, "initial": "20ms", "max": "200ms", "jitter": False}
        | (retry or {}),
        "batch": {"max_records": 200, "within": "50ms"},
    }


def hook_settings(settings: Settings, prefix: str, url: str, **kw: Any) -> tuple[str, Settings]:
    """A fresh pipeline name and the settings running :func:`hook_pipeline` under it."""
    name = ident(prefix)
    return name, with_pipelines(settings, hook_pipeline(name, url, **kw))


def events(ids: list[str], **ext: Any) -> list[CloudEvent]:
    return [CloudEvent.create("t", "/faults", {"i": i}, id=i, **ext) for i in ids]


def accepted_ids(rx: Any) -> Counter[str]:
    return Counter(r.ce_id for r in rx.accepted())


def injected(rx: Any) -> list[bytes]:
    return [
        line for r in rx.requests for line in r.header_lines if line.lower().startswith(b"x-inj")
    ]


# ------------------------------------------------------------------ item 1
async def test_a_request_error_fails_only_its_own_record(settings: Settings) -> None:
    """A 2xx whose body is cut short and a garbage status line are retried (same
    Idempotency-Key) for their own record only; an id with CR/LF never reaches a
    header: it is refused as an invalid event and dead-lettered alone."""
    seen: Counter[str] = Counter()

    async def script(req: Request) -> bytes:
        seen[req.ce_id] += 1
        if req.ce_id == "trunc-1" and seen[req.ce_id] == 1:
            return truncated_2xx()
        if req.ce_id == "garbage-1" and seen[req.ce_id] == 1:
            return garbage()
        return answer(204)

    async with receiving(script) as rx:
        name, s = hook_settings(settings, "faults", rx.url)
        ids = [f"ok-{i}" for i in range(20)] + ["trunc-1", "garbage-1"]
        ids += [f"ok-{i}" for i in range(20, 40)]
        bad = to_kafka(CloudEvent.create("t", "/faults", {}, id="crlf"))
        bad_headers = [(k, b"crlf\r\nX-Injected: 1" if k == "ce_id" else v) for k, v in bad.headers]
        msgs = [to_kafka(e) for e in events(ids[:30])]
        msgs.append(KafkaMessage(bad.key, bad.value, bad_headers))
        msgs += [to_kafka(e) for e in events(ids[30:])]
        async with running(s), Publisher(s) as pub:
            await pub.publish_messages(name, msgs, [*ids[:30], "crlf", *ids[30:]])
            assert await wait_until(lambda: set(ids) <= set(accepted_ids(rx)), 30), sorted(
                set(ids) - set(accepted_ids(rx))
            )
            letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 1, timeout=5)

    assert [dlq_headers(r)["eventpipe.dlq.stage"] for r in letters] == ["decode"], [
        dlq_headers(r) for r in letters
    ]
    h = dlq_headers(letters[0])
    assert h["eventpipe.dlq.exception.class"] == "eventpipe.errors.InvalidEventError"
    assert "control character" in h["eventpipe.dlq.exception.message"]
    assert not injected(rx)
    once = accepted_ids(rx)
    twice = {i: n for i, n in once.items() if n != 1 and i != "trunc-1"}
    assert not twice and set(ids) <= set(once), twice
    # The cut-short 2xx was resent with the same key (the receiver may have processed it).
    trunc = [r for r in rx.requests if r.ce_id == "trunc-1"]
    assert len(trunc) == 2 and trunc[0].key == trunc[1].key == "trunc-1"


async def test_headers_built_from_event_data_cannot_inject() -> None:
    """Events that skipped validation (validate=False, as CDC and transforms build
    them) still cannot inject a header: the Idempotency-Key is percent-encoded like
    ce-id, and a datacontenttype with CR/LF fails its own record, permanently."""

    async def script(req: Request) -> bytes:
        return answer(204)

    async with receiving(script) as rx:
        sink = HttpSink(HttpSinkConfig(url=rx.url))
        await sink.start()
        try:
            evs = [
                CloudEvent(id="a\r\nX-Injected: 1", source="/s", type="t", validate=False),
                CloudEvent(
                    id="b",
                    source="/s",
                    type="t",
                    data="x",
                    datacontenttype="text/plain\r\nX-Injected: 2",
                    validate=False,
                ),
                CloudEvent(id="c", source="/s", type="t", data={"ok": True}),
            ]
            failed = await sink.deliver([DeliveryItem(i, [e]) for i, e in enumerate(evs)])
        finally:
            await sink.close()
    assert set(failed) == {1}, failed
    assert isinstance(failed[1], InvalidEventError) and failed[1].field == "datacontenttype"
    assert not injected(rx)
    by_id = {r.ce_id: r for r in rx.requests}
    assert set(by_id) == {"a%0D%0AX-Injected:%201", "c"}
    assert all(r.key == r.ce_id for r in rx.requests)


# ------------------------------------------------------------------ item 2
def breaker_open(pipeline: str) -> float:
    v = REGISTRY.get_sample_value(
        "eventpipe_pipeline_sink_breaker_open", {"pipeline": pipeline, "sink": "http"}
    )
    return v or 0.0


async def test_a_partial_outage_holds_records_without_using_attempts(settings: Settings) -> None:
    """503 on 3 requests of 4: no record uses up its attempts (none is dead-lettered),
    the breaker opens (unavailability dominated the writes), and every event is
    delivered once the endpoint recovers."""
    outage = True

    async def script(req: Request) -> bytes:
        if outage and req.n % 4:
            return answer(503, "overloaded")
        return answer(204)

    async with receiving(script) as rx:
        name, s = hook_settings(
            settings,
            "partial",
            rx.url,
            retry={"max_attempts": 2},
            circuit_breaker={"failure_threshold": 2, "reset_timeout": "300ms"},
        )
        ids = [f"e-{i}" for i in range(120)]
        opened = 0.0

        async def watch() -> None:
            nonlocal opened
            while True:
                opened = max(opened, breaker_open(name))
                await asyncio.sleep(0.02)

        watcher = asyncio.ensure_future(watch())
        try:
            async with running(s), Publisher(s) as pub:
                await pub.publish_batch(name, events(ids))
                # (Records that were dead-lettered are not sent again: then 250 requests
                # never come, and the check below says why.)
                await wait_until(lambda: len(rx.requests) >= 250, 20)
                outage = False
                delivered = await wait_until(lambda: set(ids) <= set(accepted_ids(rx)), 30)
                letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 1, timeout=3)
        finally:
            watcher.cancel()
    assert not letters, (len(letters), [dlq_headers(r) for r in letters][:2])
    assert delivered
    assert opened == 1.0, "the breaker never opened during the partial outage"
    assert all(n == 1 for n in accepted_ids(rx).values())


# ------------------------------------------------------------------ item 3
async def test_events_of_one_key_are_delivered_in_order(settings: Settings) -> None:
    """Records of one partitionkey go one after the other (a retried one before the
    later ones of its key); different keys go concurrently."""
    keys = [f"k{i}" for i in range(6)]
    seen: Counter[str] = Counter()

    async def script(req: Request) -> bytes:
        seen[req.ce_id] += 1
        k, seq = req.ce_id.split("-")
        n = int(seq)
        if seen[req.ce_id] == 1 and n % 4 == 1:
            return answer(503)
        if seen[req.ce_id] == 1 and n % 5 == 3:
            return answer(500, "flaky")
        await asyncio.sleep(0.005 * ((n * 7 + int(k[1:])) % 5))
        return answer(204)

    async with receiving(script) as rx:
        name, s = hook_settings(settings, "order", rx.url, retry={"max_attempts": 5})
        evs = [
            CloudEvent.create("t", "/order", {"seq": n}, id=f"{k}-{n}", partitionkey=k)
            for n in range(15)
            for k in keys
        ]
        async with running(s), Publisher(s) as pub:
            await pub.publish_batch(name, evs)
            want = {e.id for e in evs}
            assert await wait_until(lambda: want <= set(accepted_ids(rx)), 60)

    order: dict[str, list[int]] = defaultdict(list)
    for r in rx.accepted():
        k, seq = r.ce_id.split("-")
        order[k].append(int(seq))
    inversions = {k: v for k, v in order.items() if v != sorted(v)}
    assert not inversions, inversions
    assert max(r.in_flight for r in rx.requests) > 1, "keys were not delivered concurrently"


# ------------------------------------------------------------------ item 4
async def test_retry_after_is_capped_at_retry_max(settings: Settings) -> None:
    """A Retry-After a day ahead (HTTP date or seconds) waits retry.max, not a day."""
    seen: Counter[str] = Counter()

    async def script(req: Request) -> bytes:
        seen[req.ce_id] += 1
        if req.ce_id == "far-date" and seen[req.ce_id] == 1:
            return answer(429, headers={"Retry-After": http_date(86400)})
        if req.ce_id == "far-seconds" and seen[req.ce_id] == 1:
            return answer(503, headers={"Retry-After": "86400"})
        return answer(204)

    async with receiving(script) as rx:
        name, s = hook_settings(settings, "later", rx.url, retry={"max": "1s"})
        ids = ["far-date", "far-seconds", "now"]
        async with running(s), Publisher(s) as pub:
            await pub.publish_batch(name, events(ids))
            delivered = await wait_until(lambda: set(ids) <= set(accepted_ids(rx)), 20)
    assert delivered, f"held past retry.max: {sorted(set(ids) - set(accepted_ids(rx)))}"
    for i in ("far-date", "far-seconds"):
        first, second = (r.arrived for r in rx.requests if r.ce_id == i)
        assert second - first >= 0.9, f"{i}: Retry-After not honoured up to retry.max"


# ------------------------------------------------------------------ item 5
async def test_dead_letters_carry_http_status_and_body(settings: Settings) -> None:
    big = "problem " * 700  # 5600 bytes: cut at 4 KiB

    async def script(req: Request) -> bytes:
        if req.ce_id == "bad":
            return answer(400, big, {"Content-Type": "text/plain"})
        if req.ce_id == "broken":
            return answer(500, "broken for this one")
        return answer(204)

    async with receiving(script) as rx:
        name, s = hook_settings(settings, "letters", rx.url, retry={"max_attempts": 2})
        async with running(s), Publisher(s) as pub:
            await pub.publish_batch(name, events(["bad", "broken", "fine"]))
            assert await wait_until(lambda: "fine" in accepted_ids(rx), 20)
            letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 2, timeout=20)
    by_id = {dict(r.headers)["ce_id"].decode(): dlq_headers(r) for r in letters}
    assert set(by_id) == {"bad", "broken"}
    assert by_id["bad"]["eventpipe.dlq.http.status"] == "400"
    body = by_id["bad"]["eventpipe.dlq.http.body"]
    assert len(body.encode()) == 4096 and body.endswith("(cut)") and body.startswith(big[:4000])
    assert by_id["broken"]["eventpipe.dlq.http.status"] == "500"
    assert by_id["broken"]["eventpipe.dlq.http.body"] == "broken for this one"
    assert by_id["broken"]["eventpipe.dlq.attempts"] == "2"


# ------------------------------------------------------------------ item 6
async def test_a_half_open_probe_is_one_request(settings: Settings) -> None:
    """Against an endpoint that accepts and never answers, each half-open probe is a
    single request, not the whole pending batch."""
    hung = True

    async def script(req: Request) -> bytes:
        return HANG if hung else answer(204)

    async with receiving(script) as rx:
        name, s = hook_settings(
            settings,
            "probe",
            rx.url,
            timeout="300ms",
            concurrency=4,
            circuit_breaker={"failure_threshold": 1, "reset_timeout": "500ms"},
        )
        ids = [f"e-{i}" for i in range(12)]
        async with running(s), Publisher(s) as pub:
            await pub.publish_batch(name, events(ids))
            assert await wait_until(lambda: len(rx.requests) >= 15, 30)
            hung = False
            assert await wait_until(lambda: set(ids) <= set(accepted_ids(rx)), 30)
    first_write = rx.requests[:12]
    assert max(r.in_flight for r in first_write) == 4
    probes = rx.requests[12:15]
    assert [r.in_flight for r in probes] == [1, 1, 1], [r.in_flight for r in rx.requests]


# ------------------------------------------------------------------ item 7
async def test_batch_requests_keep_their_key_when_re_formed(settings: Settings) -> None:
    """batch: true: the same records in differently formed pipeline batches (here two
    pipelines with different batch sizes; after a restart, the batch re-read) are sent
    as the same requests, with the same Idempotency-Key."""

    async def script(req: Request) -> bytes:
        return answer(204)

    async with receiving(script) as rx:
        topic = ident("batches")
        async with TopicAdmin(settings.kafka) as admin:
            await admin.ensure_topics([TopicSpec(name=topic, partitions=1)])
        ids = [f"e-{i}" for i in range(400)]
        async with Publisher(settings) as pub:
            await pub.publish_batch(topic, events(ids))
        specs = []
        for tag, size in (("a", 400), ("b", 150)):
            p = hook_pipeline(f"{topic}-{tag}", f"{rx.url}?p={tag}", batch=True)
            p["source"] = {"topics": [topic]}
            p["batch"] = {"max_records": size, "within": "1s"}
            specs.append(p)
        s = with_pipelines(settings, *specs)

        def sent(tag: str) -> dict[str, tuple[str, ...]]:
            return {
                r.key: tuple(e["id"] for e in json.loads(r.body))
                for r in rx.accepted()
                if r.path.endswith(f"p={tag}")
            }

        def complete() -> bool:
            return all(set(ids) <= {i for v in sent(t).values() for i in v} for t in ("a", "b"))

        async with running(s):
            assert await wait_until(complete, 30)
    a, b = sent("a"), sent("b")
    for reqs in (a, b):
        for got in reqs.values():  # a request holds one aligned window of offsets
            assert len({int(i.split("-")[1]) // 100 for i in got}) == 1, got
    common = set(a) & set(b)
    assert all(a[k] == b[k] for k in common)
    assert len(common) >= 2, (sorted(map(len, a.values())), sorted(map(len, b.values())))
