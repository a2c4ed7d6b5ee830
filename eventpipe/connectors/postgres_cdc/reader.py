"""The active reader's loop: peek a batch, decode, publish, and only then advance.

One iteration:

1. heartbeat when due; turn CLI signals into snapshot tasks; open the next
   snapshot chunk when none is open (:mod:`.snapshot_window`);
2. if WAL moved since the last complete read, peek up to ``batch_size`` changes
   (whole transactions);
3. decode and assemble the records (:mod:`.transactions`), publishing slices of a
   large batch as they are built (the acknowledgements of a slice are awaited
   before the next one, so a huge transaction does not pile up in memory;
   :mod:`.emitting`);
4. after every record (and dead letter) is acknowledged: save snapshot progress,
   run the change handler's ``after_ack`` (the outbox deletes rows), then advance
   the slot past the batch; a complete read also advances to the WAL flush
   position read before it, which releases WAL that holds nothing for us.

A crash anywhere before step 4's advance re-reads the batch and re-sends the same
records with the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from eventpipe.errors import RetriableError

from . import slot as slots
from .config import PostgresCdcConfig
from .emitting import Emitter
from .heartbeat import HEARTBEAT_PREFIX
from .transactions import TransactionAssembler

SLICE = 5000  # messages decoded and published before awaiting their acknowledgements
RUNNING_XACTS_INTERVAL_S = 1.0  # at most this often, and only after this much new WAL:
RUNNING_XACTS_WAL_BYTES = 256 * 1024


class SlotMissingError(RetriableError):
    """The slot went away under the reader (dropped); setup runs again."""


@dataclass(frozen=True, slots=True)
class ReaderOptions:
    """How the reader reads its slot."""

    slot: str
    publication: str
    batch_size: int = 5000  # changes per slot read (whole transactions)
    poll_interval_s: float = 0.01
    heartbeat_interval_s: float = 10.0
    signal_poll_s: float = 1.0  # how often snapshot signals are looked for

    @classmethod
    def of(cls, cfg: PostgresCdcConfig, name: str) -> ReaderOptions:
        return cls(
            slot=cfg.slot_name(name),
            publication=cfg.publication_name(name),
            batch_size=cfg.batch_size,
            poll_interval_s=cfg.poll_interval_ms / 1000,
            heartbeat_interval_s=cfg.heartbeat_interval_s,
            signal_poll_s=cfg.signal_poll_s,
        )


class CdcReader:
    """Reads one slot for one source: the loop around transaction assembly, the
    snapshot window (``changes.window``, None when snapshots are off) and emitting."""

    def __init__(
        self,
        options: ReaderOptions,
        *,
        changes: TransactionAssembler,
        emitter: Emitter,
        log: logging.Logger,
    ) -> None:
        self.options = options
        self.changes = changes
        self.window = changes.window
        self.emitter = emitter
        self.log = log
        self.caught_up_at = time.monotonic()
        self.last_event_id: str | None = None
        self._log_snapshots = True
        self._flush = 0  # WAL flush position at the last read
        self._xacts_at = 0  # ... when the last running-transactions record was asked for

    @property
    def position(self) -> int:
        """The slot's confirmed LSN, as this reader moved it."""
        return self.emitter.position

    @property
    def progressed(self) -> asyncio.Event:
        return self.emitter.progressed

    @property
    def events_total(self) -> int:
        return self.emitter.events_total

    @property
    def last_commit_at(self) -> datetime | None:
        return self.changes.last_commit_at

    async def ensure_topics(self, topics: list[str]) -> None:
        await self.emitter.ensure_topics(topics)

    # ================================================================ loop
    async def run(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        slot = self.options.slot
        info = await slots.slot_info(conn, slot)
        if info is None or info.confirmed_flush_lsn is None:
            raise SlotMissingError(f"replication slot {slot} does not exist (any more)")
        self.emitter.position = info.confirmed_flush_lsn
        try:
            await self._loop(conn, stop)
        finally:
            if self.window is not None:
                await self.window.close()

    async def _loop(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        opts = self.options
        window = self.window
        last_hb = last_signal = last_xacts = 0.0
        idle_at: int | None = None  # flush LSN at which the slot was last read empty
        busy = False  # the last read returned something: read again without asking first
        while not stop.is_set():
            now = time.monotonic()
            if now - last_hb >= opts.heartbeat_interval_s:
                await slots.emit_message(conn, HEARTBEAT_PREFIX, opts.slot)
                last_hb = now
            if (
                self._log_snapshots
                and now - last_xacts >= RUNNING_XACTS_INTERVAL_S
                and self._flush - self._xacts_at >= RUNNING_XACTS_WAL_BYTES
            ):
                await self._log_running_xacts(conn)
                self._xacts_at, last_xacts = self._flush, now
            if window is not None:
                if now - last_signal >= opts.signal_poll_s:
                    await window.take_signals()
                    last_signal = now
                await window.open_chunk(conn)
            if not busy:
                flush, _, _ = await self._read(conn, peek=False)
                if flush == idle_at:
                    self.caught_up_at = time.monotonic()
                    await self._sleep(stop, opts.poll_interval_s)
                    continue
            flush, lsns, datas = await self._read(conn, peek=True)
            complete = await self.handle(conn, flush, lsns, datas)
            busy = bool(datas)
            idle_at = flush if complete else None
            if complete:
                self.caught_up_at = time.monotonic()
        if self.emitter.advance_to is not None:  # a clean stop leaves the slot where we are
            await self._read(conn, peek=False)

    async def _read(
        self, conn: psycopg.AsyncConnection[Any], *, peek: bool
    ) -> tuple[int, list[int], list[bytes]]:
        """One round trip: the pending advance, the WAL flush position, and a peek."""
        opts = self.options
        target = self.emitter.advance_to
        flush, lsns, datas = await slots.read(
            conn, opts.slot, opts.publication, opts.batch_size, advance_to=target, peek=peek
        )
        self._flush = flush
        if target is not None:
            self.emitter.advanced(target)
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
        complete = len(datas) < self.options.batch_size
        changes = self.changes
        await changes.resolve_types(conn, datas)
        target = self.emitter.position
        events = 0
        for start in range(0, len(datas), SLICE):
            outs, upto = changes.process(lsns[start : start + SLICE], datas[start : start + SLICE])
            if outs:
                self.last_event_id = outs[-1][2]
            target = max(target, upto)
            events += await self.emitter.publish(outs)
        if complete:
            target = max(target, flush_before)
        if self.window is not None:
            await self.window.settle()
        await changes.handler.after_ack(conn, events)
        self.emitter.acknowledged(target, events)
        return complete
