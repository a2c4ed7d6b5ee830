"""A pipeline on faust-streaming: one faust app (its consumer group) and one agent.

The app runs inside the service's event loop as a mode Service (``await
app.start()``), not through faust's CLI, with ``web_enabled=False`` and the
``memory://`` store (tables are rebuilt from their changelog topics).

The agent reads its source partitions in batches -- what arrived while the batch
before was processed, up to ``batch.max_records`` (``batch.within`` adds a
minimum linger) -- straight from the app's consumer --
not through faust's per-record fetcher and channel queue, which drop records
around a rebalance -- with :class:`~eventpipe.pipelines.partition_reader.SourceReader`:
after every assignment each partition is sought to the committed offset (or
lower, to the exactly-once sinks' lowest high-water mark + 1), and from then on
its records are processed contiguously, never past a hole.  The batch is held
in flight for faust (a rebalance waits for it), processed by
:class:`~eventpipe.pipelines.batch.BatchProcessor` (every record is in its sinks
or in the dead-letter topic when it returns), the table changelog is flushed,
and only then are its offsets acked to faust, which commits them.  The flush and
ack of one batch run while the next batch is processed (that one is acked only
after them), so a record's way to its sink does not wait for the broker's
acknowledgement of the batch before's changelog records.

faust is used through its public API and :mod:`eventpipe.pipelines.faust_adapter`,
which holds every use of its internals.

``processing_guarantee: exactly_once`` switches faust to Kafka transactions;
that needs a broker whose transactional producer aiokafka can start (Apache
Kafka; not Tansu, see ARCHITECTURE.md section 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from eventpipe import metrics
from eventpipe.context import Context
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.errors import ConfigError
from eventpipe.kafka.client import faust_app_kwargs
from eventpipe.kafka.incarnation import Stale, TopicProbe, apply_policy, find_stale
from eventpipe.settings import TopicSpec
from eventpipe.sink import PipelineSink
from eventpipe.transforms import Chain
from eventpipe.transforms.base import SchemaResolver
from eventpipe.transforms.jq_engine import compile_program

from .aggregate import AggregateConfig, Aggregator
from .batch import BatchProcessor, Stage
from .changelog import ChangelogWrites, Pending
from .dedup_table import DedupStepConfig, DedupTable
from .faust_adapter import current_event as _use_event
from .partition_reader import SourceBatch, SourceReader
from .retry import RetryPolicy
from .spec import PipelineSpec, StatefulEntry, build_segments, build_sinks, build_validate

log = logging.getLogger("eventpipe.pipelines")
STOP_TIMEOUT_S = 30.0
LAG_REPORT_S = 5.0


class PipelineRuntime:
    """One pipeline: its sinks, its faust app and its agent."""

    def __init__(
        self,
        spec: PipelineSpec,
        resources: Context,
        *,
        resolve_schema: SchemaResolver | None = None,
        data_dir: Path | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.spec = spec
        self.on_failure = on_failure
        self.failure: BaseException | None = None
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
        # the last processed batch's changelog flush, then its ack
        self._finishing: asyncio.Future[None] | None = None
        self._stopping = False
        self._lag_task: asyncio.Task[None] | None = None
        self.reader: SourceReader | None = None
        # partitions whose marks were dropped (on_topic_reset: reset): read from
        # their start until a sink marks them again
        self._from_start: set[tuple[str, int]] = set()
        self.changelog: ChangelogWrites | None = None
        self.lag: dict[str, int] = {}  # "topic[partition]" -> records, by the lag report
        self.stalled: set[str] = set()  # partitions with lag that did not move

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
        publisher = self.resources.publisher
        for t in s.source.topics:
            parts = await publisher.partitions_for(t) if publisher.started else None
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
            **faust_app_kwargs(kafka, client_id=f"{kafka.client_id}-{s.name}"),
            store="memory://",
            web_enabled=False,
            datadir=str(datadir),
            processing_guarantee=s.processing_guarantee,
            consumer_auto_offset_reset=s.source.start_from,
            topic_partitions=self.partitions,
            topic_replication_factor=kafka.replication_factor,
            topic_disable_leader=True,
            broker_session_timeout=s.source.session_timeout,
            broker_heartbeat_interval=min(1.0, s.source.session_timeout / 3),
            broker_rebalance_timeout=s.source.session_timeout,
            broker_commit_interval=1.0,
            broker_max_poll_records=s.batch.max_records,
            stream_buffer_maxsize=max(4 * s.batch.max_records, 4096),
            table_cleanup_interval=60.0,
            # The memory store is rebuilt from the changelog by each process, so a
            # "persisted offset" is only what this process wrote; faust compares it with
            # the broker's end offset, which Tansu may report a moment stale -- and a
            # crashed Recovery leaves the worker assigned but idle.
            recovery_consistency_check=False,
            producer_acks=-1,
            producer_linger=0.005,
        )

    async def start(self) -> None:
        s = self.spec
        entries, problems = build_sinks(s.sinks, path="sinks", sinks=self.resources.catalog.sinks)
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
        try:
            for e in entries:
                sink = e.plugin.build(e.config, e.name, self.resources)
                sink.bind(s.name, self.resources)
                self.sinks.append(sink)
            await self._ensure_topics()
            app = self.app = self._faust_app()
            self.changelog = ChangelogWrites(app)
            self.reader = SourceReader(app, s.source.topics, marks=self._marks, probe=self._probe())
            self.reader.install()
            stages = self._stages(app, segments)
            dedup = None
            if s.state.dedup_window:
                table = self._table(app, "dedup")
                dedup = DedupTable(table, s.state.dedup_window, _use_event)
            for sink in self.sinks:
                await sink.start()
            self.processor = BatchProcessor(
                pipeline=s.name,
                stages=stages,
                sinks=self.sinks,
                dlq=DeadLetterWriter(
                    self.resources.publisher, s.dlq_topic, pool=self.resources.pool
                ),
                retry=RetryPolicy(s.retry),
                validate_input=v_in,
                validate_output=v_out,
                dedup=dedup,
                tolerance=s.errors.tolerance,
                use_event=_use_event,
                pause=self._pause,
                resume=self._resume,
                trace=self.resources.publisher.trace,
            )
            topic = app.topic(*s.source.topics, key_serializer="raw", value_serializer="raw")
            app.agent(topic, name=f"pipeline-{s.name}")(self._agent)
            await app.start()
            # Everything allocated so far (modules, the faust app, its services) lives
            # as long as the process: keep the cyclic GC from walking it again on every
            # full collection while batches allocate (+20% events/s in bench/pipeline).
            gc.collect()
            gc.freeze()
            self._lag_task = asyncio.ensure_future(self._report_lag())
        except BaseException:
            await self.stop()
            raise
        log.info("pipeline %s started (group %s, %d partitions)", s.name, s.group, self.partitions)

    def _table(self, app: faust.App, name: str) -> Any:
        assert self.changelog is not None
        bulk = self.spec.processing_guarantee != "exactly_once"
        return self.changelog.table(
            app.Table(name, partitions=self.partitions, default=None), bulk=bulk
        )

    def _stages(self, app: faust.App, segments: list[Any]) -> list[Stage]:
        stages: list[Stage] = []
        offset = 0
        for seg in segments:
            if isinstance(seg, Chain):
                stages.append(
                    Stage(name="steps:" + "|".join(seg.describe()), chain=seg, step_offset=offset)
                )
                offset += len(seg)
                continue
            assert isinstance(seg, StatefulEntry)
            name = f"steps[{offset}].{seg.kind}"
            table = self._table(app, f"state-{offset}")
            if isinstance(seg.config, AggregateConfig):
                agg = Aggregator(
                    seg.config, table, pipeline=self.name, path=name, use_event=_use_event
                )
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
        if self.reader is not None:
            self.reader.pause({TP(t, p) for t, p in tps})

    def _resume(self, tps: Iterable[tuple[str, int]]) -> None:
        if self.reader is not None:
            self.reader.resume({TP(t, p) for t, p in tps})

    def _probe(self) -> TopicProbe:
        return TopicProbe(self.resources.admin, self.resources.settings.kafka)

    async def _marks(
        self,
        topics: list[str],
        assigned: set[tuple[str, int]],
        renewed: set[tuple[str, int]] | None = None,
    ) -> dict[tuple[str, int], int]:
        """The lowest high-water mark per assigned partition over the exactly-once
        sinks, each checked to belong to the topic there now
        (eventpipe.kafka.incarnation): a mark of an earlier incarnation stops the
        pipeline (TopicResetError), or with ``on_topic_reset: reset`` is dropped and
        its partition read from the start (-1 here, until a sink marks it again).
        ``renewed``: partitions the reader saw created again while it read them
        (their marks are of the old topic, whatever the check says)."""
        sinks = [s for s in self.sinks if s.exactly_once]
        if not sinks:
            return {}
        held = {
            sink.name: {tp: m for tp, m in (await sink.marks(topics)).items() if tp in assigned}
            for sink in sinks
        }
        probe = self._probe()
        every = [m for marks in held.values() for m in marks.values()]
        stale = await find_stale(probe, every)
        if renewed:
            known = {s.mark for s in stale}
            now = await probe.ids(topics)
            stale += [
                Stale(m, now.get(m.topic), None)
                for m in every
                if m.tp in renewed and m not in known
            ]
        policy = self.spec.source.on_topic_reset or self.resources.settings.kafka.on_topic_reset
        apply_policy(
            stale,
            policy,
            owner=f"pipeline {self.name}",
            option=f"source.on_topic_reset: reset in pipeline {self.name} (or "
            "kafka.on_topic_reset / EVENTPIPE_KAFKA_ON_TOPIC_RESET=reset)",
        )
        dropped = {s.mark.tp for s in stale}
        # Read from the start until a sink marks the new topic (a retried assignment
        # no longer sees the dropped marks).
        self._from_start = (self._from_start - {tp for m in held.values() for tp in m}) | dropped
        ids = {t: i for t, i in (await probe.ids(topics)).items() if i is not None}
        low: dict[tuple[str, int], int] = {}
        for sink in sinks:
            marks = held[sink.name]
            await sink.reset_marks([s.mark.tp for s in stale if marks.get(s.mark.tp) is s.mark])
            sink.topic_ids = ids
            for tp, mark in marks.items():
                if tp not in low or mark.offset < low[tp]:
                    low[tp] = mark.offset
        for tp in self._from_start & assigned:
            low[tp] = -1
        return low

    async def _agent(self, stream: Any) -> None:
        app, reader, processor = self.app, self.reader, self.processor
        assert app is not None and reader is not None and processor is not None
        if self.failure is not None:
            return  # faust restarts a crashed agent; this pipeline is shutting down
        # faust made ``stream`` over the source topics, which subscribed them (its
        # conductor); it is never iterated, and its channel stays empty: faust's
        # fetcher leaves the source partitions to `reader`.
        max_n, linger = self.spec.batch.max_records, self.spec.batch.within
        loop = asyncio.get_running_loop()
        # The next batch is read while this one is processed (and it takes what
        # arrives until this one is done); it is checked against the assignment
        # again when its turn comes (`in_flight`).
        ahead = asyncio.ensure_future(reader.next_batch(max_n, linger))
        try:
            while not self._stopping:
                finishing = self._finishing
                if finishing is not None and not ahead.done():
                    # idle: a failed changelog flush must not wait for the next batch
                    either: list[asyncio.Future[Any]] = [ahead, finishing]
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    if finishing.done():
                        self._finishing = None
                        finishing.result()  # raises what failed
                batch = await ahead
                busy = loop.create_future()
                ahead = asyncio.ensure_future(reader.next_batch(max_n, linger, busy))
                try:
                    if batch is not None:
                        await self._run(reader, processor, batch)
                finally:
                    busy.set_result(None)
        except Exception as exc:
            # faust logs an agent's crash and carries on without it: the pipeline
            # would sit idle.  Report it, so the service exits and is restarted.
            if not self._stopping:
                self.failure = exc
                if self.on_failure is not None:
                    self.on_failure(exc)
            raise
        finally:
            ahead.cancel()

    async def _run(
        self, reader: SourceReader, processor: BatchProcessor, batch: SourceBatch
    ) -> None:
        """Process ``batch``; its changelog flush and its ack follow in
        ``self._finishing``, while the next batch is processed.  The batch before's
        must be done first: acks and changelog records stay in order, and a failure
        of it stops the pipeline before this batch is acked."""
        held = contextlib.ExitStack()
        if not held.enter_context(reader.in_flight(batch)):
            held.close()
            return  # read under an assignment that is gone: not processed
        try:
            await self._process(processor, batch)
            finishing, self._finishing = self._finishing, None
            if finishing is not None:
                await finishing
        except BaseException:
            held.close()
            raise
        assert self.changelog is not None
        writes = self.changelog.take()
        self._finishing = asyncio.ensure_future(self._finish(reader, batch, writes, held))

    async def _finish(
        self, reader: SourceReader, batch: SourceBatch, writes: Pending, held: contextlib.ExitStack
    ) -> None:
        """The batch's table writes are on their changelog: let faust commit it."""
        with held:
            assert self.changelog is not None
            await self.changelog.send(writes)
            reader.ack(batch)
            self.batches += 1

    async def _process(self, processor: BatchProcessor, batch: SourceBatch) -> None:
        task = self._batch_task = asyncio.ensure_future(processor.process(batch.records))
        try:
            await asyncio.shield(task)
        except BaseException:
            task.cancel()  # not processed: its offsets stay uncommitted
            raise
        finally:
            self._batch_task = None

    async def _report_lag(self) -> None:
        """Consumer lag per source partition, every LAG_REPORT_S; a partition that has
        lag but did not move since the last report is logged as stalled, with what the
        reader knows about it.  A partition paused by a sink (its circuit is open; the
        sink logs its own retries) is reported once per stall, not every time."""
        label = metrics.PIPELINE_CONSUMER_LAG
        last: dict[Any, int] = {}
        told: set[Any] = set()  # paused partitions whose stall was reported
        while True:
            await asyncio.sleep(LAG_REPORT_S)
            app = self.app
            if app is None:
                return
            try:
                for tp in app.consumer.assignment():
                    if tp.topic not in self.spec.source.topics:
                        continue
                    hw = app.consumer.highwater(tp)
                    pos = self.reader.positions.next.get(tp) if self.reader else None
                    if hw is None or pos is None:
                        continue
                    lag = max(0, hw - pos)
                    label.labels(
                        pipeline=self.name, topic=tp.topic, partition=str(tp.partition)
                    ).set(lag)
                    reader = self.reader
                    stalled = bool(lag) and last.get(tp) == pos and reader is not None
                    key = f"{tp.topic}[{tp.partition}]"
                    self.lag[key] = lag
                    (self.stalled.add if stalled else self.stalled.discard)(key)
                    paused = reader is not None and tp in reader.paused
                    quiet = stalled and paused and tp in told
                    if paused and stalled:
                        told.add(tp)
                    else:
                        told.discard(tp)
                    if stalled and not quiet and reader is not None:
                        log.warning(
                            "pipeline %s: %s[%d] has lag %d and has not moved from offset "
                            "%d for %gs (source ready: %s; assignment established: %s; "
                            "paused by a sink: %s; batches so far: %d)",
                            self.name,
                            tp.topic,
                            tp.partition,
                            lag,
                            pos,
                            LAG_REPORT_S,
                            reader.ready(),
                            reader.established,
                            tp in reader.paused,
                            self.batches,
                        )
                        if reader.ready() and reader.established and tp not in reader.paused:
                            reader.reread({tp})
                    last[tp] = pos
            except Exception:  # metrics must never stop a pipeline
                log.debug("lag report failed", exc_info=True)

    def assigned(self) -> bool:
        """This worker holds at least one source partition."""
        app = self.app
        if app is None:
            return False
        topics = self.spec.source.topics
        return any(tp.topic in topics for tp in app.consumer.assignment())

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
        for which in ("_batch_task", "_finishing"):  # the second may follow the first
            task = getattr(self, which)
            if task is not None and not task.done():
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), grace_s)
                if not task.done():
                    task.cancel()
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task  # (its failure, if any, was the agent's to report)
        self._finishing = None
        app, self.app = self.app, None
        if app is not None:
            try:
                await asyncio.wait_for(app.stop(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.error("pipeline %s: faust did not stop within %gs", self.name, STOP_TIMEOUT_S)
            except Exception:
                log.exception("pipeline %s: stopping faust failed", self.name)
            if self.reader is not None:
                self.reader.uninstall()
            # start() froze what existed then (the app among it); what is garbage now
            # can only be collected once it is back in the collector's generations.
            gc.unfreeze()
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:
                log.exception("pipeline %s: closing sink %s failed", self.name, sink.name)
        self.sinks = []
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None
