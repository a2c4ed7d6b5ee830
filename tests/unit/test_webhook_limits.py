"""Token bucket, group commit, record sizing and dead-letter redaction: no I/O."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict

from eventpipe.connectors.webhook.batching import Coalescer
from eventpipe.connectors.webhook.delivery_ids import RecentIds
from eventpipe.connectors.webhook.limits import TokenBucket
from eventpipe.connectors.webhook.rejects import REDACTED, Reject, dead_letter
from eventpipe.dlq.record import H_STAGE, H_STEP
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.kafka.batches import record_size


def test_token_bucket_burst_then_rate():
    t = 1000.0
    b = TokenBucket(rate=10, burst=3, now=t)
    assert [b.take(t) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = b.take(t)
    assert wait == pytest.approx(0.1)
    assert b.take(t + 0.05) == pytest.approx(0.05)  # half a token saved up meanwhile
    assert b.take(t + 0.1) == 0.0
    # a long pause refills to the burst, not beyond
    assert [b.take(t + 100) for _ in range(4)][-1] > 0


def test_token_bucket_default_burst_is_one_second():
    b = TokenBucket(rate=2.5)
    assert b.burst == 3


async def test_coalescer_groups_concurrent_items_and_queues_behind_a_running_batch():
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def handler(items: list[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            await release.wait()
        return [i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer(handler, max_batch=100)
    first = [c.submit(i) for i in range(3)]  # same loop turn: one batch
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [c.submit(i) for i in range(3, 6)]  # while the first is in flight
    await asyncio.sleep(0)
    assert batches == [[0, 1, 2]] and c.pending == 3
    release.set()
    assert await asyncio.gather(*first, *later) == [0, 10, 20, 30, 40, 50]
    assert batches == [[0, 1, 2], [3, 4, 5]]


async def test_coalescer_splits_at_max_batch_and_reports_errors_to_every_waiter():
    seen: list[int] = []

    async def handler(items: list[int]) -> list[None]:
        seen.append(len(items))
        if 13 in items:
            raise ValueError("boom")
        return [None] * len(items)

    c: Coalescer[int, None] = Coalescer(handler, max_batch=5, max_inflight=1)
    futs = [c.submit(i) for i in range(15)]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert seen == [5, 5, 5]
    assert results[:10] == [None] * 10
    assert all(isinstance(r, ValueError) for r in results[10:])


async def test_coalescer_survives_a_cancelled_waiter():
    gate = asyncio.Event()

    async def handler(items: list[str]) -> list[str]:
        await gate.wait()
        return [s.upper() for s in items]

    c: Coalescer[str, str] = Coalescer(handler)
    a, b = c.submit("a"), c.submit("b")
    await asyncio.sleep(0)
    a.cancel()
    gate.set()
    assert await b == "B"
    await c.drain()


def test_recent_ids_is_bounded():
    r = RecentIds(2)
    for k in ("a", "b", "c"):
        r.add(k)
    assert "a" not in r and "b" in r and "c" in r
    off = RecentIds(0)
    off.add("x")
    assert "x" not in off


def test_record_size_counts_key_value_and_headers():
    m = KafkaMessage(b"k" * 10, b"v" * 1000, [("ce_id", b"x" * 50)])
    assert 1060 < record_size(m) < 1200


def test_dead_letter_redacts_signatures_and_credentials():
    headers = CIMultiDict(
        {
            "Webhook-Signature": "v1,c2VjcmV0LXNpZ25hdHVyZQ==",
            "Authorization": "Bearer abc",
            "Content-Type": "application/json",
        }
    )
    reject = Reject(422, "schema-violation", "bad", reason="schema")
    letter = dead_letter(
        reject,
        source="billing",
        body=b"{}",
        headers=headers,
        redacted={"webhook-signature", "authorization"},
    )
    h = dict(letter.kafka_headers())
    assert h["http.webhook-signature"] == REDACTED
    assert h["http.authorization"] == REDACTED
    assert h["http.content-type"] == b"application/json"
    assert h[H_STAGE] == b"source" and h[H_STEP] == b"schema"
    assert letter.value == b"{}" and letter.pipeline == "billing"
    assert b"c2VjcmV0" not in b"".join(v for _, v in letter.kafka_headers())
