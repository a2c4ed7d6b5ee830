"""The sink conformance suite: the same cases against every sink of the catalog and
the "write your own sink" example (tests/conformance/profiles.py), each on the
test's real PostgreSQL, broker or HTTP receiver, through the plugin surface only
(``SinkPlugin.build(config, name, ctx)``, ``bind``, ``start`` / ``stop``,
``deliver``, ``status``).

* open and close: the profile's config is valid and passes the plugin's checks;
  ``stop`` is idempotent (and a no-op before ``start``), nothing is left open (no
  task left running, no ResourceWarning);
* a batch is delivered once: N events, exactly N effects;
* one bad record fails alone: the others are delivered, the bad one is named in
  the returned failures with a permanent error classified where it entered;
* a redelivery after a crash (a new instance, the same records at the same
  offsets) changes nothing: no second effect for exactly-once and idempotent
  sinks; for at-least-once sinks (topic, HTTP) the same effects again with the same
  CloudEvent id / ``Idempotency-Key``, so that consumers deduplicate;
* status reported: in a running pipeline, the sink's status shows the events out,
  the dead letter and its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from eventpipe.context import Context
from eventpipe.envelope import CloudEvent
from eventpipe.errors import EventpipeError, is_retriable
from eventpipe.pipelines.spec import PipelineSpec
from eventpipe.preflight import Reach
from eventpipe.publisher import Publisher
from eventpipe.service.catalog import PIPELINE
from eventpipe.settings import Settings
from eventpipe.sink import DeliveryItem, PipelineSink, SinkPlugin
from tests.conformance.base import Effect, SinkProfile
from tests.conformance.profiles import SINK_CASES, prepared, suite_context
from tests.helpers import read_records, released, tasks_left, wait_for
from tests.integration.test_pipeline_support import dlq_headers

N = 10  # good events of a batch; the bad one goes in the middle
BAD_AT = 5


@dataclass
class SinkUnderTest:
    plugin: SinkPlugin[Any]
    profile: SinkProfile
    ctx: Context
    raw: dict[str, Any]  # the sink's config, as a pipeline's YAML holds it

    @property
    def input_topic(self) -> str:
        return f"{self.profile.name}-in"

    def config(self) -> Any:
        return self.plugin.config.model_validate(self.raw)

    def build(self) -> PipelineSink:
        """As a pipeline does: the plugin's factory, then ``bind`` to the pipeline."""
        sink = self.plugin.build(self.config(), self.plugin.type, self.ctx)
        sink.bind(self.profile.name, self.ctx)
        return sink

    @contextlib.asynccontextmanager
    async def started(self) -> AsyncIterator[PipelineSink]:
        sink = self.build()
        await sink.start()
        try:
            yield sink
        finally:
            await sink.stop()

    def items(self, events: Sequence[CloudEvent]) -> list[DeliveryItem]:
        """One record per event, read at offsets 0, 1, ... of one partition."""
        return [
            DeliveryItem(i, [e], topic=self.input_topic, partition=0, offset=i, key=e.id.encode())
            for i, e in enumerate(events)
        ]

    def good(self) -> list[CloudEvent]:
        return [self.profile.event(i) for i in range(N)]

    def with_bad(self, good: list[CloudEvent]) -> list[CloudEvent]:
        return [*good[:BAD_AT], self.profile.bad_event(), *good[BAD_AT:]]


@pytest.fixture(params=SINK_CASES)
async def sut(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[SinkUnderTest]:
    async with prepared(request.param, settings) as (profile, raw, ctx):
        yield SinkUnderTest(request.param[0], profile, ctx, raw)


def ids(effects: Sequence[Effect]) -> Counter[str]:
    return Counter(e.event_id for e in effects)


async def test_open_and_close(sut: SinkUnderTest) -> None:
    config = sut.config()
    if sut.plugin.pipeline_problems is not None:
        assert sut.plugin.pipeline_problems(config, routed=False) == []
    if sut.plugin.check is not None:
        reach = Reach(sut.ctx.settings, sut.ctx.admin, sut.ctx.pool)
        assert await sut.plugin.check(config, reach) == []
        assert reach.skipped == []
    before = asyncio.all_tasks()
    async with suite_context(sut.profile) as ctx:  # its own: what runs on after is the sink's
        own = dataclasses.replace(sut, ctx=ctx)
        never = own.build()
        await never.stop()  # stopping what never started does nothing
        sink = own.build()
        assert (sink.kind, sink.type_name, sink.name) == ("sink", sut.plugin.type, sut.plugin.type)
        await sink.start()
        st = sink.status()
        assert (st.kind, st.type, st.state) == ("sink", sut.plugin.type, "running"), st
        assert sink.health() == "ok"
        await sink.stop()
        await sink.stop()  # idempotent
        assert sink.status().state == "stopped"
    assert await tasks_left(before) == []
    left = [sink, never]
    del sink, never, own
    assert released(left) == []


async def test_a_batch_is_delivered_once(sut: SinkUnderTest) -> None:
    events = sut.good()
    async with sut.started() as sink:
        assert await sink.deliver(sut.items(events)) == {}
    assert ids(await sut.profile.effects(N)) == Counter(e.id for e in events)


async def test_one_bad_record_fails_alone(sut: SinkUnderTest) -> None:
    events = sut.good()
    async with sut.started() as sink:
        failed = await sink.deliver(sut.items(sut.with_bad(events)))
    assert set(failed) == {BAD_AT}, failed
    err = failed[BAD_AT]
    # classified where it entered our code, as the record's own permanent error: the
    # pipeline dead-letters it at once and does not retry it
    assert isinstance(err, EventpipeError) and not is_retriable(err), repr(err)
    assert ids(await sut.profile.effects(N)) == Counter(e.id for e in events)


async def test_redelivery_after_a_crash_changes_nothing(sut: SinkUnderTest) -> None:
    events = sut.good()
    async with sut.started() as sink:
        assert await sink.deliver(sut.items(events)) == {}
    first = await sut.profile.effects(N)
    assert ids(first) == Counter(e.id for e in events)
    # The worker died before the pipeline committed the batch's offsets: a new one
    # builds the sink from the same config and gets the same records again.
    async with sut.started() as again:
        assert await again.deliver(sut.items(events)) == {}
    delivery = sut.profile.delivery
    assert sink.exactly_once == (delivery == "exactly_once"), "the profile contradicts the sink"
    if delivery != "at_least_once":
        after = await sut.profile.effects(N)
        assert sorted(map(repr, after)) == sorted(map(repr, first))
        return
    # At least once: every effect once more, with what a consumer deduplicates on.
    after = await sut.profile.effects(2 * N)
    by_id: dict[str, list[Effect]] = defaultdict(list)
    for e in after:
        by_id[e.event_id].append(e)
    assert sorted(by_id) == sorted(e.id for e in events)
    for event_id, sent in by_id.items():
        assert len(sent) == 2, (event_id, sent)  # sent again: no exactly-once claimed
        assert sent[0] == sent[1], "a re-send differs from the first send"
        assert sent[0].dedup_key, "nothing to deduplicate on"
    assert len({sent[0].dedup_key for sent in by_id.values()}) == N


async def test_status_reported(sut: SinkUnderTest, settings: Settings) -> None:
    name = sut.profile.name
    # A short session timeout: the broker holds a new group's first join for a while
    # that grows with it (5 s of the default 10 s).
    spec = PipelineSpec.model_validate(
        {
            "name": name,
            "source": {"topics": [sut.input_topic], "partitions": 1, "session_timeout": "2s"},
            "sinks": [{sut.plugin.type: sut.raw}],
            "retry": {"max_attempts": 2, "initial": "10ms", "max": "50ms"},
            "batch": {"max_records": 100, "within": "20ms"},
        }
    )
    pipeline = PIPELINE.build(spec, name, sut.ctx)
    events = sut.good()
    await pipeline.start()
    try:
        async with Publisher(settings) as pub:  # the test's own limits, not the sink's
            await pub.publish_batch(sut.input_topic, sut.with_bad(events))
        [letter] = await read_records(settings.kafka.bootstrap, spec.dlq_topic, 1, timeout=30)

        def sink_done() -> bool:
            [child] = pipeline.status().children
            return child.total_out >= N and bool(child.dead_letters)

        await wait_for(sink_done, pipeline.status)
        running = pipeline.status()
    finally:
        await pipeline.stop()
    [child] = running.children
    assert (child.kind, child.type, child.state) == ("sink", sut.plugin.type, "running"), child
    assert child.name == f"{name}/{sut.plugin.type}"
    assert (child.total_out, child.dead_letters) == (N, {"sink": 1})
    headers = dlq_headers(letter)
    assert headers["eventpipe.dlq.stage"] == "sink"
    assert headers["eventpipe.dlq.retriable"] == "false"
    assert child.last_error is not None
    assert child.last_error.error_class == headers["eventpipe.dlq.exception.class"]
    assert orjson.loads(orjson.dumps(running.to_dict()))["children"][0]["total_out"] == N
    assert pipeline.status().state == "stopped"
    assert ids(await sut.profile.effects(N)) == Counter(e.id for e in events)
