"""The pipeline's source consumer asks the broker to hold a fetch for at most
FETCH_WAIT_ACTIVE_MS while records come (Tansu answers a held fetch only when it
looks again, part-way through the wait), and FETCH_MAX_WAIT_MS once idle (Tansu
held fetches of partitions that had data for the whole wait, stalling a backlog;
an idle pipeline must not spin); records flow with either."""

from __future__ import annotations

import asyncio

from eventpipe.envelope import CloudEvent
from eventpipe.pipelines.component import PipelineComponent
from eventpipe.pipelines.faust_adapter import (
    ACTIVE_FOR_S,
    FETCH_MAX_WAIT_MS,
    FETCH_WAIT_ACTIVE_MS,
    aiokafka_consumer,
)
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from tests.helpers import read_events
from tests.integration.test_pipeline_support import ident, running, with_pipelines


async def test_source_fetches_wait_briefly_and_records_flow(settings: Settings) -> None:
    name = ident("fetch")
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 2},
        "sinks": [{"topic": {"topic": f"{name}.out"}}],
    }
    s = with_pipelines(settings, pipeline)
    events = [CloudEvent.create("t", "/t", {"n": i}, partitionkey=f"k{i}") for i in range(20)]
    async with running(s) as svc, Publisher(s) as pub:
        await pub.publish_batch(name, events)
        out = await read_events(s.kafka.bootstrap, f"{name}.out", 20, timeout=40)
        [comp] = [c for c in svc.components if isinstance(c, PipelineComponent)]
        assert comp.runtime is not None and comp.runtime.app is not None
        consumer = aiokafka_consumer(comp.runtime.app)
        assert consumer._fetcher._fetch_max_wait_ms == FETCH_WAIT_ACTIVE_MS
        # idle: a batch's wait for its first record (1 s) ends, and the next fetch
        # may be held long again
        await asyncio.sleep(ACTIVE_FOR_S + 1.5)
        assert consumer._fetcher._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
        more = [CloudEvent.create("t", "/t", {"n": i}, partitionkey=f"k{i}") for i in range(5)]
        await pub.publish_batch(name, more)
        out = await read_events(s.kafka.bootstrap, f"{name}.out", 25, timeout=40)
        events += more
    assert sorted(e.id for e in out) == sorted(e.id for e in events)


async def test_a_backlog_lets_the_broker_hold_fetches_long(settings: Settings) -> None:
    """Full batches (a backlog): records are there to fetch, so the consumer's fetches
    may be held long again (short waits only spun on partitions with nothing)."""
    name = ident("fetchlog")
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "batch": {"max_records": 5},
        "sinks": [{"topic": {"topic": f"{name}.out"}}],
    }
    s = with_pipelines(settings, pipeline)
    first = [CloudEvent.create("t", "/t", {"n": i}) for i in range(3)]
    backlog = [CloudEvent.create("t", "/t", {"n": i}) for i in range(400)]
    async with running(s) as svc, Publisher(s) as pub:
        await pub.publish_batch(name, first)
        await read_events(s.kafka.bootstrap, f"{name}.out", 3, timeout=40)
        [comp] = [c for c in svc.components if isinstance(c, PipelineComponent)]
        assert comp.runtime is not None and comp.runtime.app is not None
        fetcher = aiokafka_consumer(comp.runtime.app)._fetcher
        assert fetcher._fetch_max_wait_ms == FETCH_WAIT_ACTIVE_MS  # a trickle: short
        seen: list[int] = []
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                seen.append(fetcher._fetch_max_wait_ms)
                await asyncio.sleep(0.002)

        sampler = asyncio.ensure_future(sample())
        try:
            await pub.publish_batch(name, backlog)
            out = await read_events(s.kafka.bootstrap, f"{name}.out", 403, timeout=60)
        finally:
            done.set()
            await sampler
    assert len(out) == 403
    assert FETCH_MAX_WAIT_MS in seen, sorted(set(seen))
