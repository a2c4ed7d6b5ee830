"""The pipeline's source consumer asks the broker to hold a fetch for at most
FETCH_MAX_WAIT_MS (Tansu held fetches of partitions that had data for the whole
wait, stalling a backlog), and records still flow with it."""

from __future__ import annotations

from eventpipe.envelope import CloudEvent
from eventpipe.pipelines.component import PipelineComponent
from eventpipe.pipelines.faust_adapter import FETCH_MAX_WAIT_MS, aiokafka_consumer
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
        assert consumer._fetcher._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
    assert sorted(e.id for e in out) == sorted(e.id for e in events)
