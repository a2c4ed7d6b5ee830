"""The http sink against a local aiohttp server that fails, times out, answers 429
and goes down: retries with backoff, Retry-After honoured, 4xx dead-lettered at
once, 5xx dead-lettered after the retry policy, and a server that is down held
(circuit breaker) instead of dead-lettering everything."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from eventpipe.envelope import CloudEvent
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from tests.helpers import read_records, receiving_posts
from tests.integration.test_pipeline_support import dlq_headers, ident, running, with_pipelines


class Endpoint:
    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.keys_match = True
        self.down = False
        self.calls_while_down = 0

    async def handle(self, request: web.Request) -> web.Response:
        ce_id = request.headers.get("ce-id", "")
        await request.read()
        if request.headers.get("Idempotency-Key") != ce_id:
            self.keys_match = False
        if self.down:
            self.calls_while_down += 1
            return web.Response(status=503)
        self.attempts[ce_id] += 1
        n = self.attempts[ce_id]
        self.times[ce_id].append(time.monotonic())
        if ce_id.startswith("fail2") and n <= 2:
            return web.Response(status=500, text="flaky")
        if ce_id.startswith("always500"):
            return web.Response(status=500, text="broken for this one")
        if ce_id.startswith("bad400"):
            return web.Response(status=400, text="rejected")
        if ce_id.startswith("slow") and n == 1:
            await asyncio.sleep(2.0)
        if ce_id.startswith("busy") and n == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        self.delivered[ce_id] += 1
        return web.Response(status=204)


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[Endpoint, str]]:
    ep = Endpoint()
    async with receiving_posts(ep.handle) as url:
        yield ep, url


async def wait_until(pred: object, timeout: float = 30.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if pred():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return False


async def test_http_sink_retries_timeouts_429_and_dead_letters(
    settings: Settings, endpoint: tuple[Endpoint, str]
) -> None:
    ep, url = endpoint
    name = ident("hook")
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 2},
        "sinks": [
            {
                "http": {
                    "url": url,
                    "timeout": "500ms",
                    "concurrency": 8,
                    "circuit_breaker": {"failure_threshold": 3, "reset_timeout": "1s"},
                }
            }
        ],
        "retry": {"max_attempts": 4, "initial": "50ms", "max": "1s", "jitter": True},
        "batch": {"max_records": 50, "within": "20ms"},
    }
    s = with_pipelines(settings, pipeline)
    ids = (
        [f"ok-{i}" for i in range(20)]
        + ["fail2-a", "always500-a", "bad400-a", "slow-a", "busy-a"]
        + [f"ok-{i}" for i in range(20, 40)]
    )
    async with running(s), Publisher(s) as pub:
        await pub.publish_batch(
            name, [CloudEvent.create("t", "/hook", {"i": i}, id=i) for i in ids]
        )
        expected = {i for i in ids if not i.startswith(("always500", "bad400"))}
        assert await wait_until(lambda: expected <= set(ep.delivered)), sorted(
            expected - set(ep.delivered)
        )
        letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 2, timeout=20)

        # The endpoint goes down: the pipeline holds (breaker open, partition paused)
        # instead of dead-lettering, and delivers everything once it is back.
        ep.down = True
        await pub.publish_batch(
            name, [CloudEvent.create("t", "/hook", {}, id=f"later-{i}") for i in range(10)]
        )
        await asyncio.sleep(3.0)
        calls_down = ep.calls_while_down
        ep.down = False
        later = {f"later-{i}" for i in range(10)}
        assert await wait_until(lambda: later <= set(ep.delivered), 20)
        letters_after = await read_records(s.kafka.bootstrap, f"{name}.dlq", 2, timeout=3)

    assert ep.keys_match, "Idempotency-Key must be the event id"
    # A timed-out request may still complete on the server (at-least-once; the
    # Idempotency-Key lets it tell): every other event is delivered exactly once.
    twice = {i: n for i, n in ep.delivered.items() if n != 1 and i != "slow-a"}
    assert not twice, twice
    assert ep.delivered["slow-a"] >= 1
    assert ep.attempts["fail2-a"] == 3
    assert ep.attempts["slow-a"] == 2
    busy = ep.times["busy-a"]
    assert len(busy) == 2 and busy[1] - busy[0] >= 0.9, "Retry-After: 1 was not honoured"
    assert len(letters) == 2
    by_id = {dict(r.headers)["ce_id"].decode(): dlq_headers(r) for r in letters}
    assert by_id["always500-a"]["eventpipe.dlq.attempts"] == "4"
    assert by_id["always500-a"]["eventpipe.dlq.retriable"] == "true"
    assert by_id["always500-a"]["eventpipe.dlq.stage"] == "sink"
    assert by_id["always500-a"]["eventpipe.dlq.step"] == "http"
    assert by_id["bad400-a"]["eventpipe.dlq.attempts"] == "1"
    assert by_id["bad400-a"]["eventpipe.dlq.retriable"] == "false"
    assert by_id["bad400-a"]["eventpipe.dlq.exception.class"] == "eventpipe.errors.HttpStatusError"
    assert ep.attempts["always500-a"] == 4 and ep.attempts["bad400-a"] == 1
    # Down for 3 s with the breaker opening after 3 failures and probing every 1 s:
    # a handful of batch attempts, not a spin.  Nothing was dead-lettered meanwhile.
    assert 1 <= calls_down <= 10 * 8, calls_down
    assert len(letters_after) == 2
