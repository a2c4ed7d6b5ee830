"""A pipeline on faust-streaming: one faust app (its consumer group) and one agent.

The app runs inside the service's event loop as a mode Service (``await
app.start()``), not through faust's CLI, with ``web_enabled=False`` and the
``memory://`` store (tables are rebuilt from their changelog topics).

The agent takes batches straight off its channel's queue (up to
``batch.max_records``, waiting at most ``batch.within`` for more), so the
per-record path is a queue ``get_nowait`` rather than a trip through faust's
per-event stream iterator.  For each record it does what faust's stream does:
tracks the message (so a rebalance waits for the batch in flight), makes it the
current event for table writes, and acks it -- only after
:class:`~eventpipe.pipelines.batch.BatchProcessor` returned, i.e. after every
record is in its sinks or in the dead-letter topic.  The table changelog is
flushed before the acks, so committed offsets never run ahead of table state.

``processing_guarantee: exactly_once`` switches faust to Kafka transactions;
that needs a broker whose transactional producer aiokafka can start (Apache
Kafka; not Tansu, see ARCHITECTURE.md section 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import faust
from eventpipe.connectors.sinks.api import PipelineSink, SinkResources
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.transforms import Chain
from eventpipe.transforms.base import SchemaResolver
from eventpipe.transforms.jq_engine import compile_program
from faust.streams import _current_event
from faust.types import TP

from eventpipe import metrics
from eventpipe.errors import ConfigError
from eventpipe.settings import TopicSpec

from .aggregate import AggregateConfig, Aggregator
from .batch import BatchProcessor, Record, Stage
from .dedup import DedupStepConfig, DedupTable
from .retry import RetryPolicy
from .spec import PipelineSpec, StatefulEntry, build_segments, build_sinks, build_validate

log = logging.getLogger("eventpipe.pipelines")


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Make ``event`` faust's current event (table writes go to its partition)."""
    if event is None:
        yield
        return
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def _use_event(event: Any) -> AbstractContextManager[None]:
    return current_event(event)


class PipelineRuntime:
    """One pipeline: its sinks, its faust app and its agent."""

    def __init__(
        self,
        spec: PipelineSpec,
        resources: SinkResources,
        *,
        resolve_schema: SchemaResolver | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.spec = spec
        self.resources = resources
        self.resolve_schema = resolve_schema
        self.name = spec.name
        self._data_dir = data_dir
        self._own_dir: Path | None = None
        self.app: faust.App | None = None
        self.sinks: list[PipelineSink] = []
        self.processor: BatchProcessor | None = None
        self.partitions = 0
        self.batches = 0
        self._batch_task: asyncio.Future[None] | None = None
        self._stopping = False
        self._lag_task: asyncio.Task[None] | None = None
        self._positions: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------- building
    def _build_steps(self) -> tuple[list[Any], list[tuple[str, str]]]:
        segments, problems = build_segments(
            self.spec.steps, path="steps", resolve_schema=self.resolve_schema
        )
        return segments, problems

    async def _ensure_topics(self) -> None:
        s = self.spec
        admin = self.resources.admin
        specs = [TopicSpec(name=t, partitions=s.source.partitions) for t in s.source.topics]
        specs.append(TopicSpec(name=s.dlq_topic, partitions=s.dead_letter.partitions))
        for sink in self.sinks:
            part = getattr(getattr(sink, "cfg", None), "partitions", None)
            specs.extend(TopicSpec(name=t, partitions=part) for t in sink.topics())
        created = await admin.ensure_topics(specs)
        if created:
            log.info("pipeline %s created topics %s", self.name, created)
        counts = set()
        producer = self.resources.publisher._producer
        for t in s.source.topics:
            parts = await producer.partitions_for(t) if producer is not None else None
            counts.add(len(parts) if parts else (s.source.partitions or 1))
        self.partitions = max(counts)

    def _faust_app(self) -> faust.App:
        s = self.spec
        kafka = self.resources.settings.kafka
        if self._data_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix=f"eventpipe-faust-{s.name}-"))
        datadir = self._data_dir or self._own_dir
        return faust.App(
            s.group,
            broker=[f"kafka://{h.strip()}" for h in kafka.bootstrap.split(",")],
            store="memory://",
            web_enabled=False,
            datadir=str(datadir),
            processing_guarantee=s.processing_guarantee,
            consumer_auto_offset_reset=s.source.start_from,
            topic_partitions=self.partitions,
            topic_replication_factor=kafka.replication_factor,
            topic_disable_leader=True,
            broker_client_id=f"{kafka.client_id}-{s.name}",
            broker_session_timeout=s.source.session_timeout,
            broker_heartbeat_interval=min(1.0, s.source.session_timeout / 3),
            broker_rebalance_timeout=s.source.session_timeout,
            broker_commit_interval=1.0,
            broker_max_poll_records=s.batch.max_records,
            stream_buffer_maxsize=max(4 * s.batch.max_records, 4096),
            table_cleanup_interval=60.0,
            producer_acks=-1,
            producer_linger=0.005,
        )

    async def start(self) -> None:
        s = self.spec
        entries, problems = build_sinks(s.sinks, path="sinks")
        segments, step_problems = self._build_steps()
        v_in, p_in = build_validate(
            s.validate_input, path="validate_input", resolve_schema=self.resolve_schema
        )
        v_out, p_out = build_validate(
            s.validate_output, path="validate_output", resolve_schema=self.resolve_schema
        )
        problems = problems + step_problems + p_in + p_out
        if problems:
            raise ConfigError([(f"pipeline {s.name}: {p}", m) for p, m in problems])
        from eventpipe.base import sinks as registry

        try:
            for e in entries:
                sink = registry.get(e.kind)(e.config, name=e.name)
                assert isinstance(sink, PipelineSink)
                sink.bind(s.name, self.resources)
                self.sinks.append(sink)
            await self._ensure_topics()
            app = self.app = self._faust_app()
            stages = self._stages(app, segments)
            dedup = None
            if s.state.dedup_window:
                table = app.Table("dedup", partitions=self.partitions, default=None)
                dedup = DedupTable(table, s.state.dedup_window, _use_event)
            for sink in self.sinks:
                await sink.start()
            self.processor = BatchProcessor(
                pipeline=s.name,
                stages=stages,
                sinks=self.sinks,
                dlq=DeadLetterWriter(self.resources.publisher, s.dlq_topic),
                retry=RetryPolicy(s.retry),
                validate_input=v_in,
                validate_output=v_out,
                dedup=dedup,
                use_event=_use_event,
                pause=self._pause,
                resume=self._resume,
            )
            topic = app.topic(*s.source.topics, key_serializer="raw", value_serializer="raw")
            app.agent(topic, name=f"pipeline-{s.name}")(self._agent)
            await app.start()
            self._lag_task = asyncio.ensure_future(self._report_lag())
        except BaseException:
            await self.stop()
            raise
        log.info("pipeline %s started (group %s, %d partitions)", s.name, s.group, self.partitions)

    def _stages(self, app: faust.App, segments: list[Any]) -> list[Stage]:
        stages: list[Stage] = []
        offset = 0
        for seg in segments:
            if isinstance(seg, Chain):
                stages.append(Stage(name="steps:" + "|".join(seg.describe()), chain=seg,
                                    step_offset=offset))
                offset += len(seg)
                continue
            assert isinstance(seg, StatefulEntry)
            name = f"steps[{offset}].{seg.kind}"
            table = app.Table(f"state-{offset}", partitions=self.partitions, default=None)
            if isinstance(seg.config, AggregateConfig):
                agg = Aggregator(seg.config, table, pipeline=self.name, path=name,
                                 use_event=_use_event)
                stages.append(Stage(name=name, aggregator=agg))
            else:
                assert isinstance(seg.config, DedupStepConfig)
                dt = DedupTable(table, seg.config.window, _use_event)
                program = compile_program(seg.config.key, seg.config.engine)
                stages.append(Stage(name=name, dedup=(dt, program)))
            offset += 1
        return stages

    # ---------------------------------------------------------------- agent
    def _pause(self, tps: Iterable[tuple[str, int]]) -> None:
        if self.app is not None:
            self.app.consumer.pause_partitions([TP(t, p) for t, p in tps])

    def _resume(self, tps: Iterable[tuple[str, int]]) -> None:
        if self.app is not None:
            self.app.consumer.resume_partitions([TP(t, p) for t, p in tps])

    async def _take(self, queue: Any, max_n: int, within: float) -> list[Any]:
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(batch) < max_n:
            while len(batch) < max_n and not queue.empty():
                batch.append(queue.get_nowait())
            remaining = deadline - loop.time()
            if len(batch) >= max_n or remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await queue.get())
            except TimeoutError:
                break
        return batch

    async def _agent(self, stream: Any) -> None:
        app = self.app
        assert app is not None and self.processor is not None
        chan = aiter(stream.channel)  # registers the channel with the conductor
        queue = chan.queue
        consumer = app.consumer
        max_n, within = self.spec.batch.max_records, self.spec.batch.within
        while not self._stopping:
            try:
                events = await self._take(queue, max_n, within)
            except StopAsyncIteration:  # faust closes the channel on stop
                return
            # During a rebalance flow control is off; afterwards faust seeks every
            # assigned partition back to its committed offset, so records fetched under
            # an older generation are read again and are dropped here.  Records of the
            # current generation are never dropped: a gap would let a later offset's
            # mark (Postgres sink) pass over them.
            await app.flow_control.acquire()
            generation = app.consumer_generation_id
            events = [e for e in events if e.message.generation_id == generation]
            if not events:
                continue
            for e in events:
                if not e.message.tracked:
                    e.message.tracked = True
                    consumer.track_message(e.message)
            records = [_record(i, e) for i, e in enumerate(events)]
            task = self._batch_task = asyncio.ensure_future(self.processor.process(records))
            try:
                await asyncio.shield(task)
                if app.tables.changelog_topics:
                    await app.producer.buffer.flush()
                    await app.producer.flush()
            except BaseException:
                task.cancel()
                # Not processed: leave the offsets uncommitted, and let a rebalance or
                # shutdown stop waiting for these messages.
                for e in events:
                    consumer.unacked.discard(e.message)
                raise
            finally:
                self._batch_task = None
            for e in events:
                await stream.ack(e)
                self._positions[(e.message.topic, e.message.partition)] = e.message.offset + 1
            self.batches += 1

    async def _report_lag(self) -> None:
        label = metrics.PIPELINE_CONSUMER_LAG
        while True:
            await asyncio.sleep(5.0)
            app = self.app
            if app is None:
                return
            try:
                for tp in app.consumer.assignment():
                    if tp.topic not in self.spec.source.topics:
                        continue
                    hw = app.consumer.highwater(tp)
                    pos = self._positions.get((tp.topic, tp.partition))
                    if hw is None or pos is None:
                        continue
                    label.labels(
                        pipeline=self.name, topic=tp.topic, partition=str(tp.partition)
                    ).set(max(0, hw - pos))
            except Exception:  # metrics must never stop a pipeline
                log.debug("lag report failed", exc_info=True)

    # ---------------------------------------------------------------- stop
    async def stop(self, *, grace_s: float = 10.0) -> None:
        """Let the batch in flight finish (up to ``grace_s``; a batch held by a sink
        that is down is abandoned uncommitted), then stop faust and the sinks."""
        self._stopping = True
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None
        task = self._batch_task
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), grace_s)
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        app, self.app = self.app, None
        if app is not None:
            try:
                await app.stop()
            except Exception:
                log.exception("pipeline %s: stopping faust failed", self.name)
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:
                log.exception("pipeline %s: closing sink %s failed", self.name, sink.name)
        self.sinks = []
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None


def _record(index: int, e: Any) -> Record:
    m = e.message
    headers = m.headers
    if headers is None:
        headers = []
    elif not isinstance(headers, list):
        headers = list(headers.items()) if hasattr(headers, "items") else list(headers)
    ts = m.timestamp
    return Record(
        index=index,
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        timestamp_ms=int(ts * 1000) if ts is not None else None,
        key=m.key,
        value=m.value,
        headers=headers,
        handle=e,
    )
