"""The job record in Postgres (migration 0008_backfill.sql): one row per job, one
per partition (topic source) or table (table source) with its position and counts.

A partition's row is updated after each batch, once that batch is in its sinks
or the dead-letter topic, so ``--resume`` continues from the first batch not
done.  A batch done but not yet recorded (a crash in between) is read again;
what it delivered is recognised then (job marks, the delivery ledger) and
counted as duplicates.

One process runs a job at a time: it holds a session advisory lock on the job
for as long as it runs (released by PostgreSQL when the process dies, even on
``kill -9``), and a live backfill also holds one on its pipeline.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from .options import BackfillError, Mode, SourceKind

COUNTERS = (
    "read",
    "outside",
    "outputs",
    "delivered",
    "dead_lettered",
    "duplicates",
    "filtered",
    "already_dead_lettered",
    "already_replayed",
)


@dataclass
class Counts:
    read: int = 0  # records inside the time range
    outside: int = 0  # records read past but outside the range (out-of-order timestamps)
    outputs: int = 0  # events the steps produced for them
    delivered: int = 0  # records whose outputs reached at least one sink (shadow: the topic)
    dead_lettered: int = 0  # dead letters written (dry_run, shadow: that would be)
    duplicates: int = 0  # records every sink had already (skipped)
    filtered: int = 0  # records the steps dropped (no output)
    already_dead_lettered: int = 0  # failed again; their origin's dead letter exists
    already_replayed: int = 0  # of those, dead letters an operator replayed

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Progress:
    """One topic partition, or one table or key range of a table (``partition``
    -1, -2, ...: the range after ``last_key`` as planned, up to ``end_key``)."""

    stream: str
    partition: int
    start_offset: int = 0
    next_offset: int = 0
    estimate: int = 0  # records expected (for the progress bar)
    last_key: list[str] | None = None
    done: bool = False
    end_key: list[str] | None = None  # a table range's last key (inclusive); None: no end
    counts: Counts = field(default_factory=Counts)
    sinks: dict[str, dict[str, int]] = field(default_factory=dict)
    topic_id: uuid.UUID | None = None  # the topic's incarnation the offsets belong to

    @property
    def is_table(self) -> bool:
        return self.partition < 0

    @property
    def position(self) -> int:
        """How far through its estimate (offsets or rows consumed)."""
        return self.next_offset - self.start_offset

    def add_sink(self, name: str, key: str, n: int) -> None:
        if n:
            s = self.sinks.setdefault(name, {})
            s[key] = s.get(key, 0) + n


@dataclass
class Job:
    id: str
    pipeline: str
    mode: Mode
    source: SourceKind
    start: datetime
    end: datetime
    requested_end: datetime
    options: dict[str, Any] = field(default_factory=dict)
    consumer_group: str | None = None
    status: str = "running"
    runs: int = 1
    active_seconds: float = 0.0
    created_at: datetime | None = None
    finished_at: datetime | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    partitions: list[Progress] = field(default_factory=list)

    def totals(self) -> Counts:
        c = Counts()
        for p in self.partitions:
            c.add(p.counts)
        return c

    def sink_totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for p in self.partitions:
            for name, counts in p.sinks.items():
                s = out.setdefault(name, {})
                for k, v in counts.items():
                    s[k] = s.get(k, 0) + v
        return out

    @property
    def mark_prefix(self) -> str:
        """Sinks of a live job are bound as pipeline ``<pipeline>@<job>``: their
        offset marks in eventpipe.sink_offsets are the job's, not the live pipeline's."""
        return f"{self.pipeline}@{self.id}"


def new_job_id() -> str:
    return f"bf-{uuid.uuid4().hex[:12]}"


def lock_key(kind: str, name: str) -> int:
    """A signed 64-bit advisory lock key for ``kind:name``."""
    digest = hashlib.blake2b(f"eventpipe.backfill:{kind}:{name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class JobLockedError(BackfillError):
    pass


_PROGRESS_COLS = (
    "stream, partition, start_offset, next_offset, estimate, last_key, done, "
    + ", ".join(COUNTERS)
    + ", sinks, topic_id, end_key"
)


def _json(v: list[str] | None) -> Jsonb | None:
    return Jsonb(v) if v is not None else None


def _progress_row(p: Progress) -> tuple[Any, ...]:
    return (
        p.stream,
        p.partition,
        p.start_offset,
        p.next_offset,
        p.estimate,
        _json(p.last_key),
        p.done,
        *(getattr(p.counts, c) for c in COUNTERS),
        Jsonb(p.sinks),
        p.topic_id,
        _json(p.end_key),
    )


class JobStore:
    """Job rows through ``pool``; ``url`` (the same database) for the lock connection."""

    def __init__(self, pool: AsyncConnectionPool, url: str) -> None:
        self.pool = pool
        self.url = url

    async def create(self, job: Job) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "insert into eventpipe.backfill_jobs (id, pipeline, mode, source, from_time, "
                "to_time, requested_to, options, consumer_group) "
                "values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    job.id,
                    job.pipeline,
                    job.mode,
                    job.source,
                    job.start,
                    job.end,
                    job.requested_end,
                    Jsonb(job.options),
                    job.consumer_group,
                ),
            )
            await self._insert_progress(conn, job.id, job.partitions)

    async def _insert_progress(
        self, conn: psycopg.AsyncConnection[Any], job_id: str, parts: Iterable[Progress]
    ) -> None:
        rows = [(job_id, *_progress_row(p)) for p in parts]
        if not rows:
            return
        ph = ", ".join(["%s"] * len(rows[0]))
        async with conn.cursor() as cur:
            await cur.executemany(
                f"insert into eventpipe.backfill_progress (job_id, {_PROGRESS_COLS}) "
                f"values ({ph}) on conflict do nothing",
                rows,
            )

    async def add_partitions(self, job: Job, parts: list[Progress]) -> None:
        """Partitions added to a topic since the job was planned."""
        async with self.pool.connection() as conn, conn.transaction():
            await self._insert_progress(conn, job.id, parts)
        job.partitions.extend(parts)

    async def replace_partitions(
        self, job: Job, keys: set[tuple[str, int]], parts: list[Progress]
    ) -> None:
        """Partitions ``keys`` whose topic was created again: their progress is replaced
        by ``parts`` (those that still exist), and the job's offset marks for them go
        (they belong to the old topic)."""
        prefix = job.mark_prefix + "/"
        streams, numbers = [s for s, _ in keys], [n for _, n in keys]
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "delete from eventpipe.backfill_progress b using unnest(%s::text[], "
                "%s::int[]) as u(s, p) where b.job_id = %s and b.stream = u.s "
                "and b.partition = u.p",
                (streams, numbers, job.id),
            )
            await conn.execute(
                "delete from eventpipe.sink_offsets o using unnest(%s::text[], %s::int[]) "
                "as u(s, p) where left(o.sink, %s) = %s and o.topic = u.s "
                "and o.partition = u.p",
                (streams, numbers, len(prefix), prefix),
            )
            await self._insert_progress(conn, job.id, parts)
        job.partitions = [p for p in job.partitions if (p.stream, p.partition) not in keys] + parts

    async def load(self, job_id: str) -> Job | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "select id, pipeline, mode, source, from_time, to_time, requested_to, options, "
                "consumer_group, status, runs, active_seconds, created_at, finished_at, report, "
                "error from eventpipe.backfill_jobs where id = %s",
                (job_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            job = Job(
                id=row[0],
                pipeline=row[1],
                mode=cast(Mode, row[2]),
                source=cast(SourceKind, row[3]),
                start=row[4],
                end=row[5],
                requested_end=row[6],
                options=dict(row[7] or {}),
                consumer_group=row[8],
                status=row[9],
                runs=row[10],
                active_seconds=row[11],
                created_at=row[12],
                finished_at=row[13],
                report=row[14],
                error=row[15],
            )
            cur = await conn.execute(
                f"select {_PROGRESS_COLS} from eventpipe.backfill_progress "
                "where job_id = %s order by stream, partition",
                (job_id,),
            )
            for r in await cur.fetchall():
                n = len(COUNTERS)
                job.partitions.append(
                    Progress(
                        stream=r[0],
                        partition=r[1],
                        start_offset=r[2],
                        next_offset=r[3],
                        estimate=r[4],
                        last_key=list(r[5]) if r[5] is not None else None,
                        done=r[6],
                        counts=Counts(*r[7 : 7 + n]),
                        sinks=dict(r[7 + n] or {}),
                        topic_id=r[8 + n],
                        end_key=list(r[9 + n]) if r[9 + n] is not None else None,
                    )
                )
        return job

    async def save(self, job_id: str, p: Progress) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "update eventpipe.backfill_progress set next_offset = %s, last_key = %s, "
                "done = %s, "
                + ", ".join(f"{c} = %s" for c in COUNTERS)
                + ", sinks = %s, updated_at = now() "
                "where job_id = %s and stream = %s and partition = %s",
                (
                    p.next_offset,
                    _json(p.last_key),
                    p.done,
                    *(getattr(p.counts, c) for c in COUNTERS),
                    Jsonb(p.sinks),
                    job_id,
                    p.stream,
                    p.partition,
                ),
            )

    async def positions(self, job_id: str) -> tuple[int, int]:
        """(offsets or rows consumed, records read) over the job's partitions."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "select coalesce(sum(next_offset - start_offset), 0), coalesce(sum(read), 0) "
                "from eventpipe.backfill_progress where job_id = %s",
                (job_id,),
            )
            row = await cur.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def started_again(self, job: Job) -> None:
        job.runs += 1
        job.status = "running"
        async with self.pool.connection() as conn:
            await conn.execute(
                "update eventpipe.backfill_jobs set status = 'running', runs = runs + 1, "
                "error = null, updated_at = now() where id = %s",
                (job.id,),
            )

    async def finish(
        self,
        job: Job,
        status: str,
        *,
        seconds: float,
        report: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        job.status = status
        job.active_seconds += seconds
        job.report = report
        job.error = error
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "update eventpipe.backfill_jobs set status = %s, active_seconds = "
                "active_seconds + %s, report = %s, error = %s, updated_at = now(), "
                "finished_at = case when %s = 'completed' then now() else finished_at end "
                "where id = %s returning finished_at",
                (
                    status,
                    seconds,
                    Jsonb(report) if report is not None else None,
                    error,
                    status,
                    job.id,
                ),
            )
            row = await cur.fetchone()
            job.finished_at = row[0] if row else None
            if status == "completed":
                # The job's own offset marks are only needed to resume it.
                prefix = job.mark_prefix + "/"
                await conn.execute(
                    "delete from eventpipe.sink_offsets where left(sink, %s) = %s",
                    (len(prefix), prefix),
                )

    @asynccontextmanager
    async def hold(self, job: Job) -> AsyncIterator[None]:
        """The job's lock (and, in live mode, the pipeline's) for this process, on a
        connection of its own (so the workers keep the whole pool); closing it at the
        end, or the process dying, releases them."""
        keys = [("job", job.id, lock_key("job", job.id))]
        if job.mode == "live":
            keys.append(("pipeline", job.pipeline, lock_key("live", job.pipeline)))
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        try:
            for kind, name, key in keys:
                cur = await conn.execute("select pg_try_advisory_lock(%s)", (key,))
                row = await cur.fetchone()
                if row and row[0]:
                    continue
                if kind == "job":
                    raise JobLockedError(
                        f"job {job.id} is running in another process; wait for it, "
                        "or stop that process first"
                    )
                raise JobLockedError(
                    f"a live backfill of pipeline {name!r} is already running; run one "
                    "at a time (their delivery checks assume it)"
                )
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
