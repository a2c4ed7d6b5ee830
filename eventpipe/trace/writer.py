"""The trace index writer: a bounded queue, written to PostgreSQL in the background.

A producer's acknowledgement callback and a pipeline's batch end call
:meth:`TraceWriter.produced` / :meth:`TraceWriter.read`, which only append to a
list (the pipeline's records are reduced to offsets, outcome letters and ids
first, so no record is held).  A task writes what is queued every
``trace.flush_interval`` (sooner when a quarter of the queue is full), merging the
entries of one topic partition into one row (of one via, or of one pipeline), with
one COPY per table in one transaction.  Nothing waits for it: when the queue holds
``trace.queue_size`` records (the database is slow or down), new batches are
dropped, their records counted in ``eventpipe_trace_dropped_total``, with a warning
at most once a minute; those events cannot be traced.  The bound is in records, so
the memory it holds is bounded too (an id and a few pointers each).  A failed write keeps its
entries for the next one (within the same bound).  Rows older than
``trace.retention`` are deleted every few minutes.

Entries not yet written when the process is killed (at most a flush interval's
worth) are lost; a stop writes them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from eventpipe import metrics
from eventpipe.loop import cancel
from eventpipe.settings import TraceSettings
from eventpipe.trace_hook import DEAD, DELIVERED, DUPLICATE, FILTERED, fingerprints

log = logging.getLogger(__name__)
MAX_ROW_IDS = 65_536  # a row's fingerprints stay under 256 KiB
PRUNE_EVERY_S = 300.0
WARN_EVERY_S = 60.0
STOP_TIMEOUT_S = 10.0


@dataclass(slots=True)
class _Produced:
    at: float
    topic: str
    partition: int
    base: int
    ids: Sequence[str]
    members: Sequence[int] | None
    via: str


@dataclass(slots=True)
class _Read:
    at: float
    pipeline: str
    topic: str
    partition: int
    sinks: tuple[str, ...]
    offsets: list[int] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    notes: dict[str, dict[str, Any]] | None = None

    @property
    def contiguous(self) -> bool:
        return self.offsets[-1] - self.offsets[0] + 1 == len(self.offsets)


class TraceWriter:
    """The service's :class:`~eventpipe.trace_hook.TraceHook`."""

    def __init__(self, pool: AsyncConnectionPool, settings: TraceSettings) -> None:
        self.pool = pool
        self.settings = settings
        self.queue_size = settings.queue_size
        self._produced: list[_Produced] = []
        self._read: list[_Read] = []
        self._pending = 0  # records (ids) the queued entries hold
        self._wake = asyncio.Event()
        self._soon = max(1, settings.queue_size // 4)
        self._task: asyncio.Task[None] | None = None
        self._last_warning = 0.0
        self._last_prune = 0.0
        self._dropped = {
            kind: metrics.TRACE_DROPPED.labels(kind=kind) for kind in ("produced", "read")
        }
        self._rows = {t: metrics.TRACE_ROWS.labels(table=t) for t in ("produced", "read")}

    # ------------------------------------------------------------- the hook
    @property
    def pending(self) -> int:
        """Records (event ids) waiting to be written."""
        return self._pending

    def produced(
        self,
        topic: str,
        partition: int,
        base_offset: int,
        ids: Sequence[str],
        members: Sequence[int] | None,
        via: str,
    ) -> None:
        n = len(ids) if members is None else len(members)
        if self._pending + n > self.queue_size:
            self._drop("produced", n)
            return
        self._produced.append(
            _Produced(time.time(), topic, partition, base_offset, ids, members, via)
        )
        self._pending += n
        if self._pending >= self._soon:
            self._wake.set()

    def read(self, pipeline: str, records: Sequence[Any], sinks: Sequence[str]) -> None:
        if self._pending + len(records) > self.queue_size:
            self._drop("read", len(records))
            return
        at = time.time()
        groups: dict[tuple[str, int], _Read] = {}
        names = tuple(sinks)
        for rec in records:
            g = groups.get((rec.topic, rec.partition))
            if g is None:
                g = groups[(rec.topic, rec.partition)] = _Read(
                    at, pipeline, rec.topic, rec.partition, names
                )
            ev = rec.event
            g.offsets.append(rec.offset)
            g.ids.append("" if ev is None else ev.id)
            if rec.dead:
                g.codes.append(DEAD)
                stage, step = rec.failure or ("unknown", None)
                _note(g, rec.offset)["dead_letter"] = {"stage": stage, "step": step}
            elif rec.duplicate:
                g.codes.append(DUPLICATE)
            elif rec.outputs:
                g.codes.append(DELIVERED)
                outs = rec.outputs
                if len(outs) != 1 or ev is None or outs[0].id != ev.id:
                    _note(g, rec.offset)["outputs"] = [o.id for o in outs]
            else:
                g.codes.append(FILTERED)
        self._read.extend(groups.values())
        self._pending += len(records)
        if self._pending >= self._soon:
            self._wake.set()

    def _drop(self, kind: str, n: int) -> None:
        self._dropped[kind].inc(n)
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning(
                "trace index: %d record(s) waiting to be written (trace.queue_size); "
                "dropping new batches, whose events cannot be traced (counted in "
                "eventpipe_trace_dropped_total); is the database slow or down?",
                self._pending,
            )

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="trace-index-writer")

    async def stop(self) -> None:
        """Write what is queued (within STOP_TIMEOUT_S), then stop.  Idempotent."""
        task, self._task = self._task, None
        await cancel(task)
        if self.pending:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.flush()
            except Exception as exc:
                log.warning(
                    "trace index: %d record(s) not written at stop (%s)",
                    self.pending,
                    type(exc).__name__,
                )

    async def _run(self) -> None:
        interval = self.settings.flush_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                if time.monotonic() - self._last_prune >= PRUNE_EVERY_S:
                    self._last_prune = time.monotonic()
                    await self.prune()
            except Exception as exc:  # the index never stops the service
                now = time.monotonic()
                if now - self._last_warning >= WARN_EVERY_S:
                    self._last_warning = now
                    log.warning(
                        "trace index: writing or pruning failed (%s: %s); %d record(s) kept "
                        "for the next try",
                        type(exc).__name__,
                        exc,
                        self.pending,
                    )

    # -------------------------------------------------------------- writing
    async def flush(self) -> None:
        """Write everything queued now.  On failure the entries are queued again
        (up to the queue's bound) and the error raised."""
        produced, self._produced = self._produced, []
        read, self._read = self._read, []
        self._pending = 0
        if not produced and not read:
            return
        started = time.perf_counter()
        p_rows = produced_rows(produced)
        r_rows = read_rows(read)
        try:
            async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                await copy_rows(cur, p_rows, r_rows)
        except BaseException:
            self._requeue(produced, read)
            raise
        self._rows["produced"].inc(len(p_rows))
        self._rows["read"].inc(len(r_rows))
        metrics.TRACE_FLUSH_SECONDS.observe(time.perf_counter() - started)

    def _requeue(self, produced: list[_Produced], read: list[_Read]) -> None:
        """Queue a failed write's entries again, ahead of what came since; past the
        bound, the newest go (a run of the index stays whole from its start)."""
        self._produced[:0] = produced
        self._read[:0] = read
        self._pending = sum(map(_size, self._produced)) + sum(len(r.ids) for r in self._read)
        while self._pending > self.queue_size and self._produced:
            n = _size(self._produced.pop())
            self._pending -= n
            self._drop("produced", n)
        while self._pending > self.queue_size and self._read:
            n = len(self._read.pop().ids)
            self._pending -= n
            self._drop("read", n)

    async def prune(self) -> int:
        """Delete the rows older than ``trace.retention``; returns how many."""
        n = 0
        async with self.pool.connection() as conn:
            for table in ("trace_produced", "trace_read"):
                cur = await conn.execute(
                    f"delete from eventpipe.{table} where at < now() - make_interval(secs => %s)",
                    (self.settings.retention,),
                )
                n += cur.rowcount
            await conn.commit()
        return n


PRODUCED_COPY = (
    "copy eventpipe.trace_produced (at, topic, partition, via, batches, fps) "
    "from stdin (format binary)"
)
PRODUCED_TYPES = ["timestamptz", "text", "int4", "text", "int8[]", "bytea"]
READ_COPY = (
    "copy eventpipe.trace_read (at, pipeline, topic, partition, first_offset, last_offset, "
    "offsets, outcomes, fps, notes, sinks) from stdin (format binary)"
)
READ_TYPES = [
    *("timestamptz", "text", "text", "int4", "int8", "int8", "int8[]", "text"),
    *("bytea", "jsonb", "text[]"),
]


async def copy_rows(
    cur: AsyncCursor[Any], produced: Sequence[tuple[Any, ...]], read: Sequence[tuple[Any, ...]]
) -> None:
    """Rows of :func:`produced_rows` and :func:`read_rows`, one COPY per table."""
    for statement, types, rows in (
        (PRODUCED_COPY, PRODUCED_TYPES, produced),
        (READ_COPY, READ_TYPES, read),
    ):
        if not rows:
            continue
        async with cur.copy(statement) as copy:
            copy.set_types(types)
            for row in rows:
                await copy.write_row(row)


def _size(e: _Produced) -> int:
    return len(e.ids) if e.members is None else len(e.members)


def _note(g: _Read, offset: int) -> dict[str, Any]:
    if g.notes is None:
        g.notes = {}
    return g.notes.setdefault(str(offset), {})


def _time(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def produced_rows(entries: Sequence[_Produced]) -> list[tuple[Any, ...]]:
    """One row per (topic, partition, via), in the order first seen; a row holds at
    most MAX_ROW_IDS ids.  Batches that follow each other on the partition are kept
    as one run (base offset, count)."""
    rows: dict[tuple[str, int, str], tuple[float, list[int], list[str]]] = {}
    out: list[tuple[Any, ...]] = []

    def close(key: tuple[str, int, str]) -> None:
        at, batches, ids = rows.pop(key)
        out.append((_time(at), key[0], key[1], key[2], batches, fingerprints(ids)))

    for e in entries:
        key = (e.topic, e.partition, e.via)
        ids = list(e.ids) if e.members is None else [e.ids[i] for i in e.members]
        row = rows.get(key)
        if row is not None and len(row[2]) + len(ids) > MAX_ROW_IDS:
            close(key)
            row = None
        if row is None:
            row = rows[key] = (e.at, [], [])
        batches = row[1]
        if batches and batches[-2] + batches[-1] == e.base:
            batches[-1] += len(ids)  # the batch right after the last: one run
        else:
            batches.extend((e.base, len(ids)))
        row[2].extend(ids)
    for key in list(rows):
        close(key)
    return out


def read_rows(entries: Sequence[_Read]) -> list[tuple[Any, ...]]:
    """One row per run of contiguous offsets of a (pipeline, topic, partition)."""
    merged: list[_Read] = []
    last: dict[tuple[str, str, int, tuple[str, ...]], _Read] = {}
    for e in entries:
        key = (e.pipeline, e.topic, e.partition, e.sinks)
        row = last.get(key)
        if (
            row is not None
            and row.contiguous
            and e.contiguous
            and e.offsets[0] == row.offsets[-1] + 1
            and len(row.offsets) + len(e.offsets) <= MAX_ROW_IDS
        ):
            row.offsets.extend(e.offsets)
            row.codes.extend(e.codes)
            row.ids.extend(e.ids)
            if e.notes:
                row.notes = {**(row.notes or {}), **e.notes}
            continue
        row = _Read(
            e.at,
            e.pipeline,
            e.topic,
            e.partition,
            e.sinks,
            list(e.offsets),
            list(e.codes),
            list(e.ids),
            dict(e.notes) if e.notes else None,
        )
        last[key] = row
        merged.append(row)
    return [
        (
            _time(r.at),
            r.pipeline,
            r.topic,
            r.partition,
            r.offsets[0],
            r.offsets[-1],
            None if r.contiguous else r.offsets,
            "".join(r.codes),
            fingerprints(r.ids),
            Jsonb(r.notes) if r.notes else None,
            list(r.sinks),
        )
        for r in merged
    ]
