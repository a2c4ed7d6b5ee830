"""The snapshot window: the one chunk of a snapshot that is open while the log
streams, what the log supersedes in it, and its rows emitted at its high
watermark (DBLog; :mod:`.snapshot` gives the reasoning and reads the chunks).

A snapshot is a task in the source's state (queued for a new slot's initial
snapshot, or by ``eventpipe cdc snapshot``).  Between two slot reads the reader
asks the window to open the task's next chunk; the window reads it, checks that
every transaction already emitted is visible to the chunk's read (else it reads
again later), and writes the high watermark.  While the log is decoded, changes
by transactions the read did not see drop their rows from the chunk; at the
watermark, the rows left become ``op: r`` events.  A chunk's progress is saved
only once its events are acknowledged (:meth:`SnapshotWindow.settle`), so a
crash reads it again.  A snapshot that cannot be read (a bad ``--where``, a
dropped table) fails alone and the stream goes on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from eventpipe import metrics
from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.errors import is_bad_record, is_retriable

from . import pgoutput as pg
from . import slot as slots
from .events import Capture, Out, TableInfo
from .heartbeat import WATERMARK_PREFIX
from .lsn import format_lsn
from .snapshot import Chunk, KeyInfo, check_filter, key_info, max_key, read_chunk, xid_precedes
from .state import SnapshotTask, StateStore

_RECENT_XIDS_MAX = 100_000


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    try:
        return orjson.dumps(v).decode()  # json columns: their JSON, exact numbers included
    except TypeError:
        return str(v)


def row_texts(row: dict[str, Any]) -> dict[str, str | None]:
    """A converted row, for a dead letter: every value as text."""
    return {k: None if v is None else _text(v) for k, v in row.items()}


def _reason(exc: Exception) -> str:
    """One line for a failed snapshot's row (what `eventpipe cdc snapshot --wait` prints)."""
    text = str(exc)
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        text = exc.diag.message_primary
    return f"{type(exc).__name__}: {text.strip()}"


def read_rows(
    capture: Capture,
    t: TableInfo,
    rows: Iterable[tuple[str, dict[str, Any]]],
    *,
    when: datetime,
    read_ms: int,
    hw: str,
    hw_lsn: int,
    now_ms: int,
    kind: str,
    out: list[Out],
    dead: Callable[[DeadLetter], None],
) -> None:
    """Snapshot rows (event id, row) as ``op: r`` events; a row that cannot be
    encoded becomes a dead letter."""
    for event_id, row in rows:
        try:
            out.extend(
                capture.builder.change(
                    t,
                    "r",
                    None,
                    row,
                    None,
                    event_id=event_id,
                    time=when,
                    commit_ms=read_ms,
                    commit_lsn=hw,
                    xid=None,
                    lsn=hw_lsn,
                    now_ms=now_ms,
                    snapshot=kind,
                )
            )
        except Exception as exc:
            if not is_bad_record(exc):
                raise  # a bug: the reader stops before the slot passes the chunk
            dead(snapshot_dead_letter(capture, t, row_texts(row), exc))


def snapshot_dead_letter(
    capture: Capture, t: TableInfo, raw: dict[str, str | None], exc: Exception
) -> DeadLetter:
    return DeadLetter.from_exception(
        exc,
        key=None,
        value=orjson.dumps({"schema": t.schema, "table": t.table, "columns": raw}),
        headers=[],
        pipeline=capture.name,
        stage="source",
        origin=Origin(topic=t.topic),
    )


class SnapshotWindow:
    """Incremental snapshots of one slot's tables, one open chunk at a time."""

    def __init__(
        self,
        capture: Capture,
        *,
        slot: str,
        state: StateStore,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
        chunk_size: int,
        poll_s: float,
        dead: Callable[[DeadLetter], None],
        log: logging.Logger,
    ) -> None:
        self.capture = capture
        self.slot = slot
        self.state = state
        self._connect = connect
        self.chunk_size = chunk_size
        self.poll_s = poll_s  # how often to look for a queued task
        self.dead = dead
        self.log = log
        self.task: SnapshotTask | None = None
        self.chunk: Chunk | None = None  # read, its watermark written, not yet emitted
        self._task_key: KeyInfo | None = None
        self._task_checked = 0.0
        self._emitted: list[Chunk] = []  # emitted, progress saved once acknowledged
        self._recent_xids: dict[int, None] = {}  # committed transactions emitted, oldest first
        self._conn: psycopg.AsyncConnection[Any] | None = None

    # ------------------------------------------------------------ tasks
    async def take_signals(self) -> None:
        """Turn the CLI's snapshot signals into tasks."""
        queued = await self.state.take_signals(self.capture.tables)
        if queued:
            self.log.info("snapshot requested for %s", ", ".join(queued))
            self._task_checked = 0.0

    async def open_chunk(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Open the next chunk when none is open; a snapshot that cannot be read
        fails on its own (its reason in its row, what the CLI shows: a
        bug in reading it too), and the stream goes on."""
        if self.chunk is not None:
            return
        try:
            await self._open_chunk(conn)
        except Exception as exc:
            task = self.task
            if is_retriable(exc) or task is None:
                raise
            await self.close()
            reason = _reason(exc)
            self.log.error("snapshot of %s failed: %s", task.table, reason)
            await self.state.fail_task(task.id, reason)
            self.task = None

    async def _open_chunk(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self.task is None:
            now = time.monotonic()
            if now - self._task_checked < self.poll_s:
                return
            self._task_checked = now
            self.task = await self.state.next_task()
            self._task_key = None
            if self.task is None:
                return
        task = self.task
        if task.table not in self.capture.tables:
            await self.state.fail_task(task.id, f"{task.table} is not captured by this source")
            self.task = None
            return
        sconn = await self._snapshot_conn()
        if self._task_key is None:
            if task.where:  # queued past the CLI's check, or by an older version
                await check_filter(sconn, task.table, task.where)
            self._task_key = await key_info(sconn, task.table, self.capture.keys[task.table])
            if task.status == "pending":
                task.max_key = await max_key(sconn, task.table, self._task_key, task.where)
                await self.state.start_task(task.id, task.max_key)
                task.status = "running"
                self.log.info("snapshot of %s started (%s)", task.table, task.kind)
        if task.max_key is None:  # empty table
            await self.state.save_progress(task.id, None, 0, True)
            self.task = None
            return
        chunk = await read_chunk(
            sconn,
            task_id=task.id,
            table=task.table,
            key=self._task_key,
            last_key=task.last_key,
            upto=task.max_key,
            where=task.where,
            size=self.chunk_size,
            registry=self.capture.registry,
            now_ms=int(time.time() * 1000),
        )
        if not chunk.snapshot.sees_all(self._recent_xids):
            # A transaction we emitted was not yet visible to the chunk's read (its commit
            # record was written, its visibility not yet): read the chunk again later.
            self.log.debug("chunk of %s read too early; reading it again", task.table)
            return
        xmin = chunk.snapshot.xmin
        for x in [x for x in self._recent_xids if xid_precedes(x, xmin)]:
            del self._recent_xids[x]  # visible to every later read too
        if not chunk.rows and not chunk.errors and chunk.done:
            await self.state.save_progress(task.id, chunk.last_key, 0, True)
            self.log.info("snapshot of %s done", task.table)
            self.task = None
            return
        chunk.marker = f"{self.slot}:{task.id}:{uuid.uuid4().hex[:12]}"
        chunk.hw_lsn = await slots.emit_message(conn, WATERMARK_PREFIX, chunk.marker)
        self.chunk = chunk

    # ------------------------------------------------------- the log goes by
    def on_change(
        self,
        t: TableInfo,
        xid: int,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        chunk = self.chunk
        if chunk is not None and chunk.table == t.qualified:
            keys = []
            if after is not None:
                keys.append(t.key_of(after))
            if before is not None:
                keys.append(t.key_of(before))
            chunk.on_change(xid, keys)

    def on_truncate(self, t: TableInfo, xid: int) -> None:
        if self.chunk is not None and self.chunk.table == t.qualified:
            self.chunk.on_truncate(xid)

    def on_commit(self, xid: int) -> None:
        self._recent_xids[xid] = None

    def trim(self) -> None:
        """Forget the oldest emitted transactions past a bound (memory)."""
        if len(self._recent_xids) > _RECENT_XIDS_MAX:
            for x in list(self._recent_xids)[: len(self._recent_xids) - _RECENT_XIDS_MAX]:
                del self._recent_xids[x]

    def on_watermark(self, m: pg.Message, now_ms: int, out: list[Out]) -> None:
        """A watermark message: when it is the open chunk's, emit the chunk's rows."""
        chunk = self.chunk
        if chunk is not None and m.content.decode("utf-8", "replace") == chunk.marker:
            self._emit_chunk(chunk, m.lsn, now_ms, out)

    def _emit_chunk(self, chunk: Chunk, hw_lsn: int, now_ms: int, out: list[Out]) -> None:
        capture = self.capture
        schema, _, table = chunk.table.partition(".")
        t = capture.builder.snapshot_table_info(
            schema, table, chunk.names, chunk.type_oids, capture.keys[chunk.table], capture.registry
        )
        hw = format_lsn(hw_lsn)
        kind = "true" if self.task is not None and self.task.kind == "initial" else "incremental"
        read_rows(
            capture,
            t,
            ((f"{hw}:r{i}", row) for i, row in enumerate(chunk.rows.values())),
            when=datetime.fromtimestamp(chunk.read_at_ms / 1000, UTC),
            read_ms=chunk.read_at_ms,
            hw=hw,
            hw_lsn=hw_lsn,
            now_ms=now_ms,
            kind=kind,
            out=out,
            dead=self.dead,
        )
        for raw, err in chunk.errors:
            self.dead(snapshot_dead_letter(capture, t, raw, err))
        self._emitted.append(chunk)
        self.chunk = None

    # ---------------------------------------------------------- settling
    async def settle(self) -> None:
        """Everything emitted so far is acknowledged: save the chunks' progress."""
        emitted, self._emitted = self._emitted, []
        for chunk in emitted:
            await self.state.save_progress(
                chunk.task_id, chunk.last_key, len(chunk.rows), chunk.done
            )
            metrics.CDC_SNAPSHOT_ROWS.labels(source=self.capture.name).inc(len(chunk.rows))
            if self.task is not None and self.task.id == chunk.task_id:
                self.task.last_key = chunk.last_key
                if chunk.done:
                    self.log.info("snapshot of %s done", chunk.table)
                    self.task = None

    async def _snapshot_conn(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await self._connect()
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
