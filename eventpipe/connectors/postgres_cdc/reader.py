"""The active reader's loop: peek a batch, decode, publish, and only then advance.

One iteration:

1. heartbeat when due; turn CLI signals into snapshot tasks; start the next
   snapshot chunk when none is open (:mod:`.snapshot`);
2. if WAL moved since the last complete read, peek up to ``batch_size`` changes
   (whole transactions);
3. decode and build the records, publishing slices of a large batch as they are
   built (the acknowledgements of a slice are awaited before the next one, so a
   huge transaction does not pile up in memory);
4. after every record (and dead letter) is acknowledged: save snapshot progress,
   run the subclass's ``after_ack`` (the outbox deletes rows), then advance the
   slot past the batch; a complete read also advances to the WAL flush position
   read before it, which releases WAL that holds nothing for us.

A crash anywhere before step 4's advance re-reads the batch and re-sends the same
records with the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from eventpipe import metrics
from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.errors import RetriableError, is_retriable
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import Publisher

from . import pgoutput as pg
from . import slot as slots
from .events import EventBuilder, Out, TableInfo, fill_unchanged
from .heartbeat import HEARTBEAT_PREFIX, WATERMARK_PREFIX
from .lsn import format_lsn, parse_lsn
from .publishing import RecordPublisher
from .snapshot import (
    Chunk,
    KeyInfo,
    check_filter,
    key_info,
    max_key,
    read_chunk,
    select_chunk,
    xid_precedes,
)
from .state import SnapshotTask, StateStore
from .types import TypeRegistry

SLICE = 5000  # messages decoded and published before awaiting their acknowledgements
RUNNING_XACTS_INTERVAL_S = 1.0  # at most this often, and only after this much new WAL:
RUNNING_XACTS_WAL_BYTES = 256 * 1024
_I, _U, _D, _B, _C, _R, _T, _M = (ord(c) for c in "IUDBCRTM")
_RECENT_XIDS_MAX = 100_000


class SlotMissingError(RetriableError):
    """The slot went away under the reader (dropped); setup runs again."""


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    try:
        return orjson.dumps(v).decode()  # json columns: their JSON, exact numbers included
    except TypeError:
        return str(v)


def _texts(row: dict[str, Any]) -> dict[str, str | None]:
    """A converted row, for a dead letter: every value as text."""
    return {k: None if v is None else _text(v) for k, v in row.items()}


def _reason(exc: Exception) -> str:
    """One line for a failed snapshot's row (what `eventpipe cdc snapshot --wait` prints)."""
    text = str(exc)
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        text = exc.diag.message_primary
    return f"{type(exc).__name__}: {text.strip()}"


def _placeholder_unchanged(row: dict[str, Any], placeholder: str) -> None:
    for k, v in row.items():
        if v is pg.UNCHANGED:
            row[k] = placeholder


class CdcReader:
    """Reads one slot for one source.  Subclasses (the outbox relay) override
    :meth:`on_change` and :meth:`after_ack`."""

    def __init__(
        self,
        *,
        name: str,
        slot: str,
        publication: str,
        tables: Iterable[str],
        keys: dict[str, list[str]],
        builder: EventBuilder,
        registry: TypeRegistry,
        publisher: Publisher,
        admin: TopicAdmin,
        dlq: DeadLetterWriter,
        state: StateStore,
        snapshot_conn: Callable[[], Any],
        batch_size: int = 5000,
        poll_interval_s: float = 0.01,
        heartbeat_interval_s: float = 10.0,
        signal_poll_s: float = 1.0,
        chunk_size: int = 2048,
        snapshots: bool = True,
        topic_partitions: int | None = None,
        emit_messages: bool = False,
        log: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.slot = slot
        self.publication = publication
        self.captured = set(tables)
        self.keys = keys
        self.builder = builder
        self.registry = registry
        self.out = RecordPublisher(
            name=name,
            publisher=publisher,
            admin=admin,
            dlq=dlq,
            topic_partitions=topic_partitions,
        )
        self.state = state
        self._snapshot_conn_factory = snapshot_conn
        self._snapshot_conn: psycopg.AsyncConnection[Any] | None = None
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.signal_poll_s = signal_poll_s
        self.chunk_size = chunk_size
        self.snapshots = snapshots
        self.topic_partitions = topic_partitions
        self.emit_messages = emit_messages
        self.log = log or logging.getLogger(f"eventpipe.postgres_cdc.{name}")
        self.placeholder = builder.placeholder

        self.position = 0  # the slot's confirmed LSN, as this reader moved it
        self.tables: dict[int, TableInfo | None] = {}  # relation oid -> info (None: ignored)
        self._relations: dict[bytes, TableInfo | None] = {}  # Relation message -> info
        # transaction in progress while decoding
        self._xid = 0
        self._lsn_text = ""
        self._time = datetime.now(UTC)
        self._commit_ms = 0
        self._pos = 0
        self._recent_xids: dict[int, None] = {}
        # snapshots
        self.task: SnapshotTask | None = None
        self._task_key: KeyInfo | None = None
        self._task_checked = 0.0
        self.chunk: Chunk | None = None
        self._emitted: list[Chunk] = []
        # progress and stats
        self.progressed = asyncio.Event()
        self.caught_up_at = time.monotonic()
        self.last_event_id: str | None = None
        self.last_commit_at: datetime | None = None
        self.events_total = 0
        self._pending_dead: list[DeadLetter] = []
        self._log_snapshots = True
        self._advance_to: int | None = None
        self._flush = 0  # WAL flush position at the last read
        self._xacts_at = 0  # ... when the last running-transactions record was asked for

    # ================================================================ loop
    async def run(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        info = await slots.slot_info(conn, self.slot)
        if info is None or info.confirmed_flush_lsn is None:
            raise SlotMissingError(f"replication slot {self.slot} does not exist (any more)")
        self.position = info.confirmed_flush_lsn
        try:
            await self._loop(conn, stop)
        finally:
            await self._close_snapshot_conn()

    async def _loop(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        last_hb = last_signal = last_xacts = 0.0
        idle_at: int | None = None  # flush LSN at which the slot was last read empty
        busy = False  # the last read returned something: read again without asking first
        while not stop.is_set():
            now = time.monotonic()
            if now - last_hb >= self.heartbeat_interval_s:
                await slots.emit_message(conn, HEARTBEAT_PREFIX, self.slot)
                last_hb = now
            if (
                self._log_snapshots
                and now - last_xacts >= RUNNING_XACTS_INTERVAL_S
                and self._flush - self._xacts_at >= RUNNING_XACTS_WAL_BYTES
            ):
                await self._log_running_xacts(conn)
                self._xacts_at, last_xacts = self._flush, now
            if self.snapshots and now - last_signal >= self.signal_poll_s:
                queued = await self.state.take_signals(self.captured)
                if queued:
                    self.log.info("snapshot requested for %s", ", ".join(queued))
                    self._task_checked = 0.0
                last_signal = now
            if self.snapshots and self.chunk is None:
                await self._next_chunk(conn)
            if not busy:
                flush, _, _ = await self._read(conn, peek=False)
                if flush == idle_at:
                    self.caught_up_at = time.monotonic()
                    await self._sleep(stop, self.poll_interval_s)
                    continue
            flush, lsns, datas = await self._read(conn, peek=True)
            complete = await self.handle(conn, flush, lsns, datas)
            busy = bool(datas)
            idle_at = flush if complete else None
            if complete:
                self.caught_up_at = time.monotonic()
        if self._advance_to is not None:  # a clean stop leaves the slot where we are
            await self._read(conn, peek=False)

    async def _read(
        self, conn: psycopg.AsyncConnection[Any], *, peek: bool
    ) -> tuple[int, list[int], list[bytes]]:
        """One round trip: the pending advance, the WAL flush position, and a peek."""
        target = self._advance_to
        flush, lsns, datas = await slots.read(
            conn, self.slot, self.publication, self.batch_size, advance_to=target, peek=peek
        )
        self._flush = flush
        if target is not None:
            self._advance_to = None
            self.position = max(self.position, target)
            self.progressed.set()
        return flush, lsns, datas

    async def _log_running_xacts(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Each slot read decodes WAL from the slot's restart_lsn, which moves only at a
        running-transactions record (PostgreSQL writes one every 15 s).  Asking for one
        every second keeps that distance, and so the cost of every read, small."""
        try:
            await conn.execute("select pg_log_standby_snapshot()")
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction) as exc:
            self._log_snapshots = False
            self.log.info(
                "cannot call pg_log_standby_snapshot() (%s); slot reads get slower with "
                "the WAL between the slot's restart_lsn and its position. On PostgreSQL 16+ "
                "run `GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() TO <role>;`",
                type(exc).__name__,
            )

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def handle(
        self,
        conn: psycopg.AsyncConnection[Any],
        flush_before: int,
        lsns: list[int],
        datas: list[bytes],
    ) -> bool:
        """Publish one batch and settle it; the slot advances with the next read (one
        round trip).  Returns True when the read was complete (the slot had nothing
        more at ``flush_before``, read just before the peek)."""
        complete = len(datas) < self.batch_size
        await self._resolve_types(conn, datas)
        target = self.position
        events = 0
        for start in range(0, len(datas), SLICE):
            outs, upto = self.process(lsns[start : start + SLICE], datas[start : start + SLICE])
            target = max(target, upto)
            await self.publish(outs)
            events += len(outs)
        if complete:
            target = max(target, flush_before)
        await self._acknowledged(conn)
        if target > self.position:
            self._advance_to = target  # everything before it is acknowledged
        if events:
            metrics.CDC_EVENTS.labels(source=self.name).inc(events)
            self.events_total += events
        return complete

    # =========================================================== decoding
    async def _resolve_types(self, conn: psycopg.AsyncConnection[Any], datas: list[bytes]) -> None:
        """Before decoding: look up user types named by new Relation messages."""
        oids: set[int] = set()
        for data in datas:
            if data[0] == _R and data not in self._relations:
                rel = pg.decode(data)
                assert isinstance(rel, pg.Relation)
                oids.update(c.type_oid for c in rel.columns)
        if oids and self.registry.unknown(oids):
            await self.registry.resolve(conn, oids)

    def _relation(self, data: bytes) -> None:
        info = self._relations.get(data, ...)
        if info is ...:
            rel = pg.decode(data)
            assert isinstance(rel, pg.Relation)
            qualified = f"{rel.namespace}.{rel.name}"
            if qualified in self.captured:
                info = self.builder.table_info(rel, self.registry, self.keys.get(qualified))
            else:
                info = None
            self._relations[data] = info
            old = self.tables.get(rel.oid)
            if info is not None and old is not None and old.names != info.names:
                self.log.info("%s columns changed: %s -> %s", qualified, old.names, info.names)
            rel_oid = rel.oid
        else:
            rel_oid = int.from_bytes(data[1:5], "big")
        self.tables[rel_oid] = info

    def process(self, lsns: list[int], datas: list[bytes]) -> tuple[list[Out], int]:
        """Decode messages into records.  Returns (records, LSN the slot may advance to
        once they are acknowledged)."""
        out: list[Out] = []
        upto = 0
        now_ms = int(time.time() * 1000)
        for lsn, data in zip(lsns, datas, strict=True):
            tag = data[0]
            if tag in (_I, _U, _D):
                msg = pg.decode(data)
                t = self.tables.get(msg.relation)  # type: ignore[union-attr]
                if t is None:
                    continue
                pos = self._pos
                try:
                    self._change(t, msg, lsn, now_ms, out)
                except Exception as exc:
                    if isinstance(exc, (pg.ProtocolError, AssertionError)):
                        raise
                    self._dead_letter(t, msg, f"{self._lsn_text}:{pos}", exc)
                    self._pos = max(self._pos, pos + 1)
            elif tag == _B:
                b = pg.decode(data)
                assert isinstance(b, pg.Begin)
                self._xid = b.xid
                self._lsn_text = format_lsn(b.final_lsn)
                self._commit_ms = pg.unix_ms(b.commit_ts)
                self._time = pg.pg_time(b.commit_ts)
                self._pos = 0
            elif tag == _C:
                c = pg.decode(data)
                assert isinstance(c, pg.Commit)
                upto = max(upto, c.end_lsn)
                self._recent_xids[self._xid] = None
                self.last_commit_at = self._time
            elif tag == _R:
                self._relation(data)
            elif tag == _T:
                tr = pg.decode(data)
                assert isinstance(tr, pg.Truncate)
                for oid in tr.relations:
                    t = self.tables.get(oid)
                    if t is None:
                        continue
                    if self.chunk is not None and self.chunk.table == t.qualified:
                        self.chunk.on_truncate(self._xid)
                    out.append(
                        self.builder.truncate(
                            t,
                            event_id=f"{self._lsn_text}:{self._pos}",
                            time=self._time,
                            commit_ms=self._commit_ms,
                            commit_lsn=self._lsn_text,
                            xid=self._xid,
                            lsn=lsn,
                            now_ms=now_ms,
                        )
                    )
                    self._pos += 1
            elif tag == _M:
                m = pg.decode(data)
                assert isinstance(m, pg.Message)
                if not m.transactional:
                    # pgoutput gives a message the END of its record (the next record's
                    # start): advancing there skips the message, and not what follows it
                    upto = max(upto, m.lsn)
                self._on_message(m, now_ms, out)
            # Type ('Y') and Origin ('O') need nothing: types resolve by OID.
        if len(self._recent_xids) > _RECENT_XIDS_MAX:
            for x in list(self._recent_xids)[: len(self._recent_xids) - _RECENT_XIDS_MAX]:
                del self._recent_xids[x]
        if out:
            self.last_event_id = out[-1][2]
        return out, upto

    def _change(self, t: TableInfo, msg: pg.Decoded, lsn: int, now_ms: int, out: list[Out]) -> None:
        before: dict[str, Any] | None = None
        after: dict[str, Any] | None = None
        unchanged: list[str] | None = None
        if isinstance(msg, pg.Insert):
            op = "c"
            after, _ = t.row(msg.new)
        elif isinstance(msg, pg.Update):
            op = "u"
            after, unch = t.row(msg.new)
            full_old = False
            if msg.old_kind == "O" and msg.old is not None:
                before, _ = t.row(msg.old)
                full_old = True
            elif msg.old_kind == "K" and msg.old is not None:
                before = t.key_row(msg.old)
            else:
                before = {k: after.get(k) for k in t.key}
            if unch:
                unchanged = fill_unchanged(
                    after, unch, before if full_old else None, self.placeholder
                )
            if full_old:
                _placeholder_unchanged(before, self.placeholder)
        else:
            assert isinstance(msg, pg.Delete)
            op = "d"
            if msg.old_kind == "O":
                before, _ = t.row(msg.old)
                _placeholder_unchanged(before, self.placeholder)
            else:
                before = t.key_row(msg.old)
        chunk = self.chunk
        if chunk is not None and chunk.table == t.qualified:
            keys = []
            if after is not None:
                keys.append(t.key_of(after))
            if before is not None:
                keys.append(t.key_of(before))
            chunk.on_change(self._xid, keys)
        if op == "u" and before is not None and t.key_of(before) != t.key_of(after):  # type: ignore[arg-type]
            # The key changed: as Debezium does, a delete of the old key, then a create.
            self.on_change(t, "d", before, None, None, lsn, now_ms, out)
            self.on_change(t, "c", None, after, unchanged, lsn, now_ms, out)
            return
        self.on_change(t, op, before, after, unchanged, lsn, now_ms, out)

    def on_change(
        self,
        t: TableInfo,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        unchanged: list[str] | None,
        lsn: int,
        now_ms: int,
        out: list[Out],
    ) -> None:
        """Turn one row change into records (the outbox relay routes instead)."""
        event_id = f"{self._lsn_text}:{self._pos}"
        self._pos += 1
        out.extend(
            self.builder.change(
                t,
                op,
                before,
                after,
                unchanged,
                event_id=event_id,
                time=self._time,
                commit_ms=self._commit_ms,
                commit_lsn=self._lsn_text,
                xid=self._xid,
                lsn=lsn,
                now_ms=now_ms,
            )
        )

    def _on_message(self, m: pg.Message, now_ms: int, out: list[Out]) -> None:
        if m.prefix == HEARTBEAT_PREFIX:
            return
        if m.prefix == WATERMARK_PREFIX:
            chunk = self.chunk
            if chunk is not None and m.content.decode("utf-8", "replace") == chunk.marker:
                self._emit_chunk(chunk, m.lsn, now_ms, out)
            return
        if not self.emit_messages:
            return
        if m.transactional:
            event_id = f"{self._lsn_text}:{self._pos}"
            self._pos += 1
            xid: int | None = self._xid
            commit_ms, when, commit_lsn = self._commit_ms, self._time, self._lsn_text
        else:
            commit_lsn = format_lsn(m.lsn)
            event_id = f"{commit_lsn}:m"
            xid, commit_ms, when = None, now_ms, datetime.now(UTC)
        out.append(
            self.builder.message(
                m.prefix,
                m.content,
                transactional=m.transactional,
                event_id=event_id,
                time=when,
                commit_ms=commit_ms,
                commit_lsn=commit_lsn,
                xid=xid,
                lsn=m.lsn,
                now_ms=now_ms,
            )
        )

    def _dead_letter(self, t: TableInfo, msg: pg.Decoded, event_id: str, exc: Exception) -> None:
        raw: dict[str, Any] = {}
        values = getattr(msg, "new", None) or getattr(msg, "old", None) or []
        for name, v in zip(t.names, values, strict=False):
            raw[name] = (
                None
                if v is None
                else "(unchanged TOAST value)"
                if v is pg.UNCHANGED
                else bytes(v).decode("utf-8", "replace")
            )
        value = orjson.dumps(
            {
                "id": event_id,
                "schema": t.schema,
                "table": t.table,
                "message": type(msg).__name__.lower(),
                "columns": raw,
            }
        )
        self._pending_dead.append(
            DeadLetter.from_exception(
                exc,
                key=None,
                value=value,
                headers=[("ce_id", event_id.encode())],
                pipeline=self.name,
                stage="source",
                origin=Origin(topic=t.topic),
            )
        )
        self.log.error(
            "%s: row %s cannot be encoded, sent to the dead-letter topic: %s",
            t.qualified,
            event_id,
            exc,
        )

    # ========================================================== snapshots
    async def _snap_conn(self) -> psycopg.AsyncConnection[Any]:
        if self._snapshot_conn is None or self._snapshot_conn.closed:
            self._snapshot_conn = await self._snapshot_conn_factory()
        return self._snapshot_conn

    async def _close_snapshot_conn(self) -> None:
        conn, self._snapshot_conn = self._snapshot_conn, None
        if conn is not None:
            await conn.close()

    async def _next_chunk(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Start the next chunk; a snapshot that cannot be read (a bad ``--where``, a
        dropped table) fails on its own, and the stream goes on."""
        try:
            await self._maybe_start_chunk(conn)
        except Exception as exc:
            task = self.task
            if is_retriable(exc) or task is None:
                raise
            await self._close_snapshot_conn()
            reason = _reason(exc)
            self.log.error("snapshot of %s failed: %s", task.table, reason)
            await self.state.fail_task(task.id, reason)
            self.task = None

    async def _maybe_start_chunk(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self.task is None:
            now = time.monotonic()
            if now - self._task_checked < self.signal_poll_s:
                return
            self._task_checked = now
            self.task = await self.state.next_task()
            self._task_key = None
            if self.task is None:
                return
        task = self.task
        if task.table not in self.captured:
            await self.state.fail_task(task.id, f"{task.table} is not captured by this source")
            self.task = None
            return
        sconn = await self._snap_conn()
        if self._task_key is None:
            if task.where:  # queued past the CLI's check, or by an older version
                await check_filter(sconn, task.table, task.where)
            self._task_key = await key_info(sconn, task.table, self.keys[task.table])
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
            registry=self.registry,
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

    def _emit_chunk(self, chunk: Chunk, hw_lsn: int, now_ms: int, out: list[Out]) -> None:
        schema, _, table = chunk.table.partition(".")
        t = self.builder.snapshot_table_info(
            schema, table, chunk.names, chunk.type_oids, self.keys[chunk.table], self.registry
        )
        hw = format_lsn(hw_lsn)
        when = datetime.fromtimestamp(chunk.read_at_ms / 1000, UTC)
        kind = "true" if self.task is not None and self.task.kind == "initial" else "incremental"
        for i, row in enumerate(chunk.rows.values()):
            try:
                self.on_snapshot_row(
                    t, row, f"{hw}:r{i}", when, chunk.read_at_ms, hw, hw_lsn, now_ms, kind, out
                )
            except Exception as exc:
                self._pending_dead.append(self._snapshot_dead_letter(t, _texts(row), exc))
        for raw, err in chunk.errors:
            self._pending_dead.append(self._snapshot_dead_letter(t, raw, err))
        self._emitted.append(chunk)
        self.chunk = None

    def on_snapshot_row(
        self,
        t: TableInfo,
        row: dict[str, Any],
        event_id: str,
        when: datetime,
        read_ms: int,
        hw: str,
        hw_lsn: int,
        now_ms: int,
        kind: str,
        out: list[Out],
    ) -> None:
        out.extend(
            self.builder.change(
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

    async def snapshot_all(self, conn: psycopg.AsyncConnection[Any], tables: list[str]) -> int:
        """``snapshot: initial_only``: every table in one consistent REPEATABLE READ
        transaction, in key chunks, without the log.  Returns the rows emitted."""
        total = 0
        async with conn.transaction():
            await conn.execute("set transaction isolation level repeatable read, read only")
            cur = await conn.execute("select pg_current_wal_lsn()::text")
            row = await cur.fetchone()
            assert row is not None
            at = row[0]
            at_lsn = parse_lsn(at)
            when = datetime.now(UTC)
            read_ms = int(when.timestamp() * 1000)
            for table in tables:
                key = await key_info(conn, table, self.keys[table])
                last: list[str] | None = None
                schema, _, name = table.partition(".")
                while True:
                    sel = await select_chunk(
                        conn,
                        table=table,
                        key=key,
                        last_key=last,
                        upto=None,
                        where=None,
                        size=self.chunk_size,
                        registry=self.registry,
                    )
                    t = self.builder.snapshot_table_info(
                        schema, name, sel.names, sel.type_oids, key.columns, self.registry
                    )
                    outs: list[Out] = []
                    now_ms = int(time.time() * 1000)
                    for r in sel.rows.values():
                        eid = f"{at}:r{total}"
                        total += 1
                        try:
                            self.on_snapshot_row(
                                t, r, eid, when, read_ms, at, at_lsn, now_ms, "true", outs
                            )
                        except Exception as exc:
                            self._pending_dead.append(self._snapshot_dead_letter(t, _texts(r), exc))
                    for raw, err in sel.errors:
                        self._pending_dead.append(self._snapshot_dead_letter(t, raw, err))
                    await self.publish(outs)
                    last = sel.last_key
                    if sel.count < self.chunk_size:
                        break
        return total

    def _snapshot_dead_letter(
        self, t: TableInfo, raw: dict[str, str | None], exc: Exception
    ) -> DeadLetter:
        return DeadLetter.from_exception(
            exc,
            key=None,
            value=orjson.dumps({"schema": t.schema, "table": t.table, "columns": raw}),
            headers=[],
            pipeline=self.name,
            stage="source",
            origin=Origin(topic=t.topic),
        )

    # ========================================================= publishing
    async def ensure_topics(self, topics: Iterable[str]) -> None:
        await self.out.ensure_topics(topics)

    async def publish(self, outs: list[Out]) -> None:
        dead, self._pending_dead = self._pending_dead, []
        await self.out.publish(outs, dead)

    async def _acknowledged(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Everything read so far is acknowledged: save snapshot progress, run hooks."""
        emitted, self._emitted = self._emitted, []
        for chunk in emitted:
            await self.state.save_progress(
                chunk.task_id, chunk.last_key, len(chunk.rows), chunk.done
            )
            metrics.CDC_SNAPSHOT_ROWS.labels(source=self.name).inc(len(chunk.rows))
            if self.task is not None and self.task.id == chunk.task_id:
                self.task.last_key = chunk.last_key
                if chunk.done:
                    self.log.info("snapshot of %s done", chunk.table)
                    self.task = None
        await self.after_ack(conn)

    async def after_ack(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Hook: runs after a batch is acknowledged and before the slot advances."""
        return None
