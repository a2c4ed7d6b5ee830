"""The pipeline as a backfill runs it: its steps and validation, built as the live
pipeline builds them, and in place of its sinks what the mode asks for
(:mod:`eventpipe.backfill.sinks`).

Stateful steps keep their state in memory for the run (no faust tables): a
``dedup`` step dedupes within the backfill; ``aggregate`` steps are refused in
live mode (:func:`eventpipe.backfill.options.check_pipeline_for`).

Each worker gets a :class:`Lane`: its own :class:`BatchProcessor` and sink
wrappers over the shared real sinks, so the outcome of a batch is its own.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from eventpipe.context import Context
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.errors import ConfigError
from eventpipe.pipelines.aggregate import AggregateConfig, Aggregator
from eventpipe.pipelines.batch import BatchProcessor, Record, Stage
from eventpipe.pipelines.component import fetch_schemas
from eventpipe.pipelines.dedup_table import DedupStepConfig, DedupTable
from eventpipe.pipelines.retry import RetryPolicy
from eventpipe.pipelines.spec import (
    PipelineSpec,
    SinkEntry,
    StatefulEntry,
    build_segments,
    build_sinks,
    build_validate,
)
from eventpipe.settings import TopicSpec
from eventpipe.sink import PipelineSink
from eventpipe.transforms import Chain, ValidateStep
from eventpipe.transforms.jq_engine import compile_program

from .dead_letters import KnownDeadLetters, RecognisedDeadLetters, load_known, origin_key
from .job import Counts, Job
from .shadow_tables import (
    ShadowRows,
    ShadowTableSink,
    create_scratch,
    shadow_tables,
)
from .sinks import (
    CapturedDeadLetters,
    DeliveryChecks,
    DryRunSink,
    LedgerMixin,
    LiveSink,
    Outcome,
    Samples,
    ShadowSink,
    ledgered,
)
from .topic_reader import ms


def _no_event(_: Any) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


# The most keys a run's in-memory dedup table (and each dedup step's) holds: a
# backfill reads history at full speed, so a time window would hold every key of
# the range.  Duplicates further apart than this many events go through twice;
# keyed sinks are idempotent and the others check the delivery ledger.
DEDUP_KEYS = 100_000


class RunDedup(DedupTable):
    """An in-memory dedup table for one run that forgets its oldest keys beyond
    ``limit`` (the window of ``window_s`` still applies)."""

    def __init__(self, window_s: float, limit: int | None = None) -> None:
        self._keys: OrderedDict[str, Any] = OrderedDict()
        super().__init__(self._keys, window_s, _no_event)
        self.limit = DEDUP_KEYS if limit is None else limit

    def mark(self, key: str, partition: int) -> None:
        keys = self._keys
        keys[key] = [int(self.clock() * 1000), partition]
        keys.move_to_end(key)
        while len(keys) > self.limit:
            keys.popitem(last=False)

    def expire(self, events_by_partition: dict[int, Any], *, every_s: float = 5.0) -> int:
        return 0  # bounded by ``limit`` instead


def make_stages(spec: PipelineSpec, segments: Sequence[Any]) -> list[Stage]:
    """Stages as the runtime names them, stateful ones over in-memory tables."""
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
        if isinstance(seg.config, AggregateConfig):
            table: dict[str, Any] = {}
            agg = Aggregator(seg.config, table, pipeline=spec.name, path=name, use_event=_no_event)
            stages.append(Stage(name=name, aggregator=agg))
        else:
            assert isinstance(seg.config, DedupStepConfig)
            dt = RunDedup(seg.config.window)
            stages.append(
                Stage(name=name, dedup=(dt, compile_program(seg.config.key, seg.config.engine)))
            )
        offset += 1
    return stages


@dataclass
class BuiltPipeline:
    spec: PipelineSpec
    stages: list[Stage]
    validate_input: ValidateStep | None
    validate_output: ValidateStep | None
    sinks: list[SinkEntry]


async def build_pipeline(spec: PipelineSpec, ctx: Context) -> BuiltPipeline:
    """Steps, validation and sink entries; every problem at once (schemas resolved now)."""
    resolve = await fetch_schemas(spec, ctx)
    segments, problems = build_segments(spec.steps, path="steps", resolve_schema=resolve)
    v_in, p_in = build_validate(spec.validate_input, path="validate_input", resolve_schema=resolve)
    v_out, p_out = build_validate(
        spec.validate_output, path="validate_output", resolve_schema=resolve
    )
    entries, p_sinks = build_sinks(spec.sinks, path="sinks", sinks=ctx.catalog.sinks)
    problems = problems + p_in + p_out + p_sinks
    if problems:
        raise ConfigError([(f"pipeline {spec.name}: {p}", m) for p, m in problems])
    return BuiltPipeline(spec, make_stages(spec, segments), v_in, v_out, entries)


@dataclass
class LaneResult:
    counts: Counts
    sinks: dict[str, dict[str, int]] = field(default_factory=dict)


class Lane:
    """One worker's processor: ``process`` runs a batch and says what became of it."""

    def __init__(
        self, processor: BatchProcessor, outcome: Outcome, letters: RecognisedDeadLetters
    ) -> None:
        self.processor = processor
        self.outcome = outcome
        self.letters = letters

    def dedup_keys(self) -> int:
        """Keys the in-memory dedup tables hold (the run's and its dedup steps')."""
        p = self.processor
        n = len(p.dedup.table) if p.dedup is not None else 0
        return n + sum(len(st.dedup[0].table) for st in p.stages if st.dedup is not None)

    async def process(self, records: list[Record]) -> LaneResult:
        counts = Counts(read=len(records))
        if not records:
            return LaneResult(counts)
        self.outcome.reset(records)
        already = self.letters.already
        already.clear()
        await self.processor.process(records)
        delivered = self.outcome.delivered
        skipped = self.outcome.skipped
        for r in records:
            if r.dead:
                key = (
                    origin_key(r.topic, r.partition, r.offset, r.timestamp_ms, r.headers)
                    if already
                    else None
                )
                replayed = already.get(key) if key is not None else None
                if replayed is None:
                    counts.dead_lettered += 1
                else:
                    counts.already_dead_lettered += 1
                    counts.already_replayed += replayed
            elif r.duplicate:  # the same (source, id) earlier in the run
                counts.duplicates += 1
            elif not r.outputs:
                counts.filtered += 1
            else:
                counts.outputs += len(r.outputs)
                if any(r.index in s for s in delivered.values()):
                    counts.delivered += 1
                elif any(r.index in s for s in skipped.values()):
                    counts.duplicates += 1
        per_sink: dict[str, dict[str, int]] = {}
        for name, idx in delivered.items():
            per_sink.setdefault(name, {})["delivered"] = len(idx)
        for name, idx in skipped.items():
            per_sink.setdefault(name, {})["skipped"] = len(idx)
        return LaneResult(counts, per_sink)


class ModeRunner:
    """Builds lanes for one job; ``start`` / ``close`` own the real sinks (live)."""

    def __init__(self, built: BuiltPipeline, ctx: Context, job: Job, *, samples: int = 5) -> None:
        self.built = built
        self.ctx = ctx
        self.job = job
        self.spec = built.spec
        self.samples = Samples(samples)
        self.sinks: list[PipelineSink] = []
        self.checks: DeliveryChecks | None = None
        self.known = KnownDeadLetters()
        # shadow: the tables the sinks write, compared at the end (:mod:`.shadow_tables`)
        self.shadow_tables = shadow_tables(self.built.sinks, job.id)
        self._table_pools: dict[str, AsyncConnectionPool] = {}
        # As the live pipeline does: an event seen twice (same source and id) within
        # the dedup window goes through once; here the table lives in memory.
        window = self.spec.state.dedup_window
        self.dedup = RunDedup(window) if window else None

    @property
    def shadow_topic(self) -> str:
        return f"{self.spec.name}.shadow"

    async def _load_known(self) -> None:
        """The origins already on the dead-letter topic (:mod:`.dead_letters`)."""
        spec, job, ctx = self.spec, self.job, self.ctx
        assert ctx.pool is not None
        if spec.dlq_topic not in await ctx.admin.list_topics():
            return
        sources = set(spec.source.topics)
        if job.source == "table":
            from .table_reader import resolve_tables

            sources |= {t.topic for t in resolve_tables(ctx.settings, spec)}
        self.known = await load_known(
            ctx.settings.kafka,
            ctx.pool,
            dlq_topic=spec.dlq_topic,
            source_topics=sources,
            since_ms=ms(job.start),
        )

    async def setup(self) -> None:
        """Once per job run, before any lane (the coordinator, with worker processes):
        the topics and scratch tables the mode writes to."""
        spec, job, ctx = self.spec, self.job, self.ctx
        if job.mode == "shadow":
            await ctx.admin.ensure_topics([TopicSpec(name=self.shadow_topic)])
            for t in self.shadow_tables:
                pool = await self._table_pool(t.url)
                async with pool.connection() as conn:
                    await create_scratch(conn, t)
        elif job.mode == "live":
            await ctx.admin.ensure_topics(
                [TopicSpec(name=spec.dlq_topic, partitions=spec.dead_letter.partitions)]
            )

    async def start(self) -> None:
        """In each process that runs lanes: what they share (known dead letters, the
        shadow tables' pools, live mode's checks and real sinks)."""
        spec, job, ctx = self.spec, self.job, self.ctx
        await self._load_known()
        if job.mode == "shadow":
            for t in self.shadow_tables:
                await self._table_pool(t.url)
            return
        if job.mode != "live":
            return
        assert ctx.pool is not None
        self.checks = DeliveryChecks(
            ctx.pool,
            ctx.settings.kafka,
            job_id=job.id,
            mark_prefix=job.mark_prefix,
            live_group=spec.group,
            from_topics=job.source == "topic",
            force=bool(job.options.get("force")),
        )
        try:
            for e in self.built.sinks:
                sink = e.plugin.build(e.config, e.name, ctx)
                keyed = e.kind == "postgres" and getattr(e.config, "mode", "") in (
                    "upsert",
                    "delete",
                )
                if not keyed:  # the same sink, with the ledger in its transaction
                    sink = ledgered(type(sink)).build(e.config, e.name, ctx)
                if isinstance(sink, LedgerMixin):
                    sink.ledger_label = f"{spec.name}/{e.name}"
                    sink.ledger_job = job.id
                # Bound as "<pipeline>@<job>": the sink's offset marks are the job's own.
                sink.bind(job.mark_prefix, ctx)
                self.sinks.append(sink)
                await sink.start()
        except BaseException:
            await self.close()
            raise

    async def _table_pool(self, url: str | None) -> AsyncConnectionPool:
        """The service's pool, or one of a sink's own database."""
        if url is None:
            assert self.ctx.pool is not None
            return self.ctx.pool
        pool = self._table_pools.get(url)
        if pool is None:
            pool = AsyncConnectionPool(
                url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
            )
            await pool.open(wait=True, timeout=10)
            self._table_pools[url] = pool
        return pool

    async def close(self) -> None:
        pools, self._table_pools = self._table_pools, {}
        for pool in pools.values():
            with contextlib.suppress(Exception):
                await pool.close()
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.close()
        self.sinks = []
        checks, self.checks = self.checks, None
        if checks is not None:
            await checks.close()

    def lane(self) -> Lane:
        spec, job, ctx = self.spec, self.job, self.ctx
        outcome = Outcome()
        dlq: DeadLetterWriter
        wrapped: list[PipelineSink]
        if job.mode == "live":
            assert self.checks is not None
            dlq = DeadLetterWriter(ctx.publisher, spec.dlq_topic, pool=ctx.pool)
            wrapped = [
                LiveSink(
                    s,
                    pipeline=spec.name,
                    checks=self.checks,
                    outcome=outcome,
                    from_topics=job.source == "topic",
                )
                for s in self.sinks
            ]
        elif job.mode == "shadow":
            dlq = CapturedDeadLetters(ctx.publisher, spec.dlq_topic, self.samples)
            wrapped = [ShadowSink(ctx.publisher, self.shadow_topic, job.id, outcome)]
            for e in self.built.sinks:
                targets = [t for t in self.shadow_tables if t.sink == e.name]
                if targets:
                    assert ctx.pool is not None
                    pools = [self._table_pools[t.url] if t.url else ctx.pool for t in targets]
                    wrapped.append(ShadowTableSink(ShadowRows(e, targets), pools, outcome))
        else:
            dlq = CapturedDeadLetters(ctx.publisher, spec.dlq_topic, self.samples)
            wrapped = [DryRunSink(e, outcome, self.samples) for e in self.built.sinks]
        letters = RecognisedDeadLetters(dlq, self.known)
        processor = BatchProcessor(
            pipeline=spec.name,
            stages=self.built.stages,
            sinks=wrapped,
            dlq=letters,
            retry=RetryPolicy(spec.retry),
            validate_input=self.built.validate_input,
            validate_output=self.built.validate_output,
            dedup=self.dedup,
        )
        return Lane(processor, outcome, letters)
