"""Running a job: plan (or load) it, then workers over its partitions (or tables),
each batch through a :class:`~eventpipe.backfill.modes.Lane` and recorded in the
job before the next is read; then the shadow comparison and the report."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from eventpipe.context import Context
from eventpipe.db.migrations import apply_migrations
from eventpipe.db.pool import open_pool
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.kafka.incarnation import Mark, TopicProbe, apply_policy, find_stale
from eventpipe.loop import frozen_heap, run_all
from eventpipe.pipelines.spec import PipelineSpec
from eventpipe.plugin import Catalog
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings

from .job import Job, JobStore, Progress, new_job_id
from .modes import BuiltPipeline, Lane, LaneResult, ModeRunner, build_pipeline
from .options import (
    BackfillArgumentError,
    BackfillError,
    BackfillRequest,
    check_pipeline_for,
    find_pipeline,
)
from .progress import NoView, ProgressView
from .rate import RateLimiter
from .report import build_report
from .shadow import compare
from .shadow_tables import compare_tables
from .table_reader import TableReader, TableTarget, resolve_tables
from .topic_reader import Batch, PartitionReader, ms, plan_partitions
from .usage import cpu_count, usage

log = logging.getLogger("eventpipe.backfill")


async def open_context(settings: Settings, catalog: Catalog, *, migrate: bool = True) -> Context:
    """The database pool (migrated: the job tables), producer and topic admin.  Unlike
    the service's, it creates no topics: a dry run writes nothing to Kafka.
    ``catalog``: the sinks the pipelines name (the caller's composition root's)."""
    pool = await open_pool(settings.database)
    ctx = Context(settings, Publisher(settings), TopicAdmin(settings.kafka), pool, catalog)
    try:
        if migrate:
            await apply_migrations(settings.database.url.get_secret_value())
        await ctx.admin.start()
        await ctx.publisher.start()
    except BaseException:
        await ctx.close()
        raise
    return ctx


def resolve_request(
    settings: Settings, req: BackfillRequest, catalog: Catalog
) -> PipelineSpec | None:
    """Config-level checks of a new job (no connections): the pipeline exists, can be
    backfilled in this mode, and (table source) has CDC tables.  None when resuming
    (the job names its pipeline)."""
    sinks = catalog.sinks
    if req.resume is not None:
        return find_pipeline(settings, req.pipeline, sinks) if req.pipeline else None
    assert req.pipeline is not None
    spec = find_pipeline(settings, req.pipeline, sinks)
    check_pipeline_for(spec, req.mode, sinks, allow_overwrite=req.allow_overwrite)
    if req.source == "table":
        resolve_tables(settings, spec, req.tables)
    return spec


class Backfill:
    def __init__(
        self,
        ctx: Context,
        req: BackfillRequest,
        *,
        view: ProgressView | None = None,
        now: datetime | None = None,
    ) -> None:
        assert ctx.pool is not None, "a backfill needs the database"
        self.ctx = ctx
        self.settings = ctx.settings
        self.req = req
        self.view = view or NoView()
        self.store = JobStore(ctx.pool, self.settings.database.url.get_secret_value())
        self.now = now
        self.job: Job | None = None
        self.spec: PipelineSpec | None = None
        self.built: BuiltPipeline | None = None
        self.targets: dict[str, TableTarget] = {}
        self.run_read = 0
        self.workers = 1
        self.worker_usage: list[dict[str, Any]] = []  # what each worker process used
        # the most records in this process's lanes at once, and dedup keys held
        self.window = {"records": 0, "dedup_keys": 0, "limit": 0}
        self._held = 0
        self.last_report: dict[str, Any] | None = None
        self.on_job: Any = None  # called with the job once it exists (CLI prints its id)

    # ------------------------------------------------------------- planning
    async def _load(self, job_id: str) -> Job:
        job = await self.store.load(job_id)
        if job is None:
            raise BackfillArgumentError("--resume", f"there is no backfill job {job_id!r}")
        req = self.req
        if req.pipeline and req.pipeline != job.pipeline:
            raise BackfillArgumentError(
                "--pipeline", f"job {job.id} backfills {job.pipeline!r}, not {req.pipeline!r}"
            )
        return job

    async def _plan(self, spec: PipelineSpec) -> Job:
        req = self.req
        assert req.start is not None and req.end is not None
        created = self.now or datetime.now(UTC)
        job = Job(
            id=new_job_id(),
            pipeline=spec.name,
            mode=req.mode,
            source=req.source,
            start=req.start,
            end=min(req.end, created),
            requested_end=req.end,
            options={
                "rate": req.rate,
                "concurrency": req.concurrency,
                "time_column": req.time_column,
                "tables": list(req.tables),
                "samples": req.samples,
                "force": req.force,
                "allow_overwrite": req.allow_overwrite,
                "workers": req.workers if req.workers is not None else 1,
            },
            created_at=created,
        )
        job.consumer_group = f"{spec.group}.backfill.{job.id}"
        if job.source == "topic":
            job.partitions = await self._plan_topics(spec.source.topics, job)
        else:
            ranges = cpu_count() if req.workers == 0 else (req.workers or 1)
            for target in self.targets.values():
                reader = TableReader(target, req.time_column, job.start, job.end)
                await reader.open()
                try:
                    job.partitions.extend(await reader.plan_ranges(ranges))
                finally:
                    await reader.close()
        await self.store.create(job)
        return job

    async def prepare(self, *, plan: bool = True) -> Job:
        """Create the job (or load it to resume) and build the pipeline.  ``plan``:
        partitions added to the topics since are added to the job (a worker process
        leaves that to its coordinator)."""
        req = self.req
        sinks = self.ctx.catalog.sinks
        if req.resume is not None:
            job = await self._load(req.resume)
            spec = find_pipeline(self.settings, job.pipeline, sinks)
            check_pipeline_for(
                spec, job.mode, sinks, allow_overwrite=bool(job.options.get("allow_overwrite"))
            )
        else:
            assert req.pipeline is not None
            spec = find_pipeline(self.settings, req.pipeline, sinks)
            check_pipeline_for(spec, req.mode, sinks, allow_overwrite=req.allow_overwrite)
            job = None
        source = job.source if job is not None else req.source
        if source == "table":
            only = job.options.get("tables", []) if job is not None else req.tables
            self.targets = {t.stream: t for t in resolve_tables(self.settings, spec, only)}
        self.spec = spec
        self.built = await build_pipeline(spec, self.ctx)
        if job is None:
            job = await self._plan(spec)
        elif plan and job.source == "topic" and job.status != "completed":
            await self._check_incarnations(job, spec.source.topics)
            known = {(p.stream, p.partition) for p in job.partitions}
            added = await self._plan_topics(spec.source.topics, job, known=known)
            if added:
                await self.store.add_partitions(job, added)
        self.job = job
        return job

    async def _plan_topics(
        self, topics: list[str], job: Job, known: set[tuple[str, int]] | None = None
    ) -> list[Progress]:
        """Progress rows from ``offsets_for_times``, each with its topic's id."""
        parts = await plan_partitions(self.settings.kafka, topics, job.start, job.end, known=known)
        ids = await self.ctx.admin.topic_ids(topics)
        for p in parts:
            p.topic_id = ids.get(p.stream)
        return parts

    async def _check_incarnations(self, job: Job, topics: list[str]) -> None:
        """A job resumed after its topic was deleted and created again: its offsets
        belong to the old topic.  kafka.on_topic_reset: fail stops; reset plans
        those partitions again (from --from in the new topic)."""
        marks = [
            Mark(p.stream, p.partition, p.next_offset - 1, p.topic_id)
            for p in job.partitions
            if not p.done
        ]
        stale = await find_stale(TopicProbe(self.ctx.admin, self.settings.kafka), marks)
        apply_policy(
            stale,
            self.settings.kafka.on_topic_reset,
            owner=f"backfill job {job.id}",
            option="kafka.on_topic_reset: reset (EVENTPIPE_KAFKA_ON_TOPIC_RESET=reset) for "
            "this --resume",
        )
        if stale:
            gone = {s.mark.tp for s in stale}
            keep = {(p.stream, p.partition) for p in job.partitions} - gone
            fresh = await self._plan_topics(topics, job, known=keep)
            await self.store.replace_partitions(
                job, gone, [p for p in fresh if (p.stream, p.partition) in gone]
            )

    # ------------------------------------------------------------------ run
    async def run(self) -> dict[str, Any]:
        job = self.job or await self.prepare()
        if self.on_job is not None:
            self.on_job(job)
        if job.status == "completed" and job.report is not None:
            return job.report
        assert self.built is not None and self.spec is not None
        async with self.store.hold(job):
            if self.req.resume is not None:
                await self.store.started_again(job)
            runner = ModeRunner(
                self.built, self.ctx, job, samples=int(job.options.get("samples", 5))
            )
            started = time.monotonic()
            status, error = "failed", None
            report: dict[str, Any] | None = None
            workers = self._worker_count(job)
            self.workers = workers
            self._start_view(job)
            try:
                await runner.setup()
                if workers == 1:
                    await runner.start()
                    rate = job.options.get("rate")
                    await self._work(job, runner, [p for p in job.partitions if not p.done], rate)
                else:
                    from .workers import run_workers

                    await run_workers(self, job, runner, workers)
                self.view.stop()
                comparison = None
                if job.mode == "shadow":
                    comparison = await self._compare(job, runner)
                status = "completed"
                job.status = status
                report = build_report(
                    job,
                    run_seconds=time.monotonic() - started,
                    run_read=self.run_read,
                    destination=self._destination(runner),
                    samples=self._samples(runner),
                    comparison=comparison,
                    run=self._run_facts(),
                )
                return report
            except asyncio.CancelledError:
                status = "interrupted"
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                self.view.stop()
                seconds = time.monotonic() - started
                job.status = status
                if report is None:
                    report = build_report(
                        job,
                        run_seconds=seconds,
                        run_read=self.run_read,
                        destination=self._destination(runner),
                        samples=self._samples(runner),
                        run=self._run_facts(),
                    )
                self.last_report = report
                await runner.close()
                await self.store.finish(job, status, seconds=seconds, report=report, error=error)

    async def _compare(self, job: Job, runner: ModeRunner) -> dict[str, Any]:
        """Shadow outputs against the live topics, and the sinks' rows against their
        tables."""
        assert self.spec is not None and self.built is not None
        existing = await self.ctx.admin.list_topics()
        comparison = (
            await compare(
                self.settings.kafka,
                job=job,
                shadow_topic=runner.shadow_topic,
                source_topics=self.spec.source.topics,
                entries=self.built.sinks,
                existing=existing,
                limit=runner.samples.limit,
                has_tables=bool(runner.shadow_tables),
            )
        ).as_dict()
        comparison["tables"] = await compare_tables(
            runner.shadow_tables,
            self.settings.database.url.get_secret_value(),
            limit=runner.samples.limit,
        )
        return comparison

    def _destination(self, runner: ModeRunner) -> str | None:
        job, spec = runner.job, runner.spec
        if job.mode == "shadow":
            return f"outputs written to {runner.shadow_topic}"
        if job.mode == "live":
            return f"dead letters to {spec.dlq_topic}"
        return "dry run: nothing was written"

    @staticmethod
    def _samples(runner: ModeRunner) -> dict[str, Any] | None:
        if runner.job.mode == "live":
            return None
        s = runner.samples
        return {"outputs": s.outputs, "dead_letters": s.dead_letters}

    def _worker_count(self, job: Job) -> int:
        """Worker processes for this run: ``--workers`` (on resume, else the job's),
        ``auto`` one per core; never more than there are partitions (tables) left."""
        asked = self.req.workers
        if asked is None:
            asked = int(job.options.get("workers") or 1)
        if asked == 0:
            asked = cpu_count()
        left = sum(1 for p in job.partitions if not p.done)
        return max(1, min(asked, left))

    def _start_view(self, job: Job) -> None:
        total = sum(max(p.estimate, p.position) for p in job.partitions)
        done = sum(
            max(p.estimate, p.position) if p.done else min(p.position, p.estimate)
            for p in job.partitions
        )
        self.view.start(f"{job.id} {job.mode}", total, done)

    def _run_facts(self) -> dict[str, Any]:
        """Worker processes, their peak RSS and CPU time, where their batches spent
        their time, and the most records / dedup keys a process held."""
        own = usage(self.spec.name if self.spec is not None else "")
        lanes = self.worker_usage if self.workers > 1 else [own]
        stages: dict[str, float] = {}
        for u in lanes:
            for k, v in u.get("stage_seconds", {}).items():
                stages[k] = round(stages.get(k, 0.0) + v, 3)
        return {
            "workers": self.workers,
            "peak_rss_mb": {
                "coordinator": own["peak_rss_mb"],
                "workers": [u.get("peak_rss_mb", 0.0) for u in self.worker_usage],
            },
            "cpu_s": {
                "coordinator": own["cpu_s"],
                "workers": [u.get("cpu_s", 0.0) for u in self.worker_usage],
            },
            "stage_seconds": stages,
            "window": dict(self.window),
        }

    async def _work(
        self, job: Job, runner: ModeRunner, parts: list[Progress], rate: float | None
    ) -> None:
        """``parts`` through lanes (``--concurrency`` of them) in this process."""
        assert self.spec is not None
        todo = deque(parts)
        limiter = RateLimiter(float(rate) if rate else None)
        size = limiter.batch_size(self.spec.batch.max_records)
        concurrency = max(1, min(int(job.options.get("concurrency", 4)), len(todo) or 1))
        self.window["limit"] = concurrency * size
        with frozen_heap():
            # the first lane's failure is raised as it is (a CancelledError stays one)
            await run_all(self._lane(job, runner, todo, limiter, size) for _ in range(concurrency))

    async def _lane(
        self,
        job: Job,
        runner: ModeRunner,
        todo: deque[Progress],
        limiter: RateLimiter,
        size: int,
    ) -> None:
        lane = runner.lane()
        if job.source == "topic":
            # a dry run leaves no trace in Kafka, not even its group's offsets
            group = job.consumer_group if job.mode != "dry_run" else None
            async with PartitionReader(self.settings.kafka, group, max_records=size) as reader:
                while todo:
                    p = todo.popleft()
                    batches = reader.batches(p, ms(job.start), ms(job.end))
                    async for batch in batches:
                        await self._step(job, lane, p, batch, limiter)
                        await reader.commit(p)
            return
        while todo:
            p = todo.popleft()
            target = self.targets.get(p.stream)
            if target is None:
                raise BackfillError(
                    f"job {job.id} reads table {p.stream.removeprefix('table:')}, which no "
                    "postgres_cdc source of the config feeds into the pipeline any more"
                )
            treader = TableReader(target, str(job.options["time_column"]), job.start, job.end)
            await treader.open()
            try:
                async for batch in treader.batches(p, size):
                    await self._step(job, lane, p, batch, limiter)
            finally:
                await treader.close()

    async def _step(
        self, job: Job, lane: Lane, p: Progress, batch: Batch, limiter: RateLimiter
    ) -> None:
        await limiter.acquire(len(batch.records))
        window = self.window
        self._held += len(batch.records)
        window["records"] = max(window["records"], self._held)
        try:
            result: LaneResult = await lane.process(batch.records)
        finally:
            self._held -= len(batch.records)
        window["dedup_keys"] = max(window["dedup_keys"], lane.dedup_keys())
        before = p.position
        p.counts.add(result.counts)
        p.counts.outside += batch.outside
        for name, c in result.sinks.items():
            for k, n in c.items():
                p.add_sink(name, k, n)
        p.next_offset = batch.next_offset
        if batch.last_key is not None:
            p.last_key = batch.last_key
        p.done = batch.done
        await self.store.save(job.id, p)
        self.run_read += len(batch.records)
        self.view.advance(max(0, p.position - before), len(batch.records))
