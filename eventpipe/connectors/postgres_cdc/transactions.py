"""Transaction assembly: decoded pgoutput messages in, a transaction's change
events out.

pgoutput sends each committed transaction whole, in commit order: Begin, its
Relation messages (whenever a table's shape is new to the session), its
Insert / Update / Delete / Truncate / transactional Message, Commit.  An event's
id is the transaction's commit LSN and its position in the transaction
(``0/16B3748:3``), so a re-read of the same WAL gives the same ids and consumers
deduplicate (ARCHITECTURE.md section 3).  An update that changes the key is, as
in Debezium, a delete of the old key and a create of the new one.

A row that cannot be encoded (a class says its data is bad,
:func:`eventpipe.errors.is_bad_record`) becomes a dead letter and keeps its
position (the ids after it do not move); a protocol error stops the reader, since
the stream can no longer be trusted, and so does an error no class explains (a
bug), before the slot passes the row.  The snapshot window, when there is one, sees every
change, truncate and commit go by, and the watermark messages that close its
chunks (:mod:`.snapshot_window`).

Where the slot may advance once the events are acknowledged: the end of the last
commit, or the end of a non-transactional message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import psycopg

from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.errors import is_bad_record

from . import pgoutput as pg
from .events import Capture, Out, TableInfo, fill_unchanged
from .heartbeat import HEARTBEAT_PREFIX, WATERMARK_PREFIX
from .lsn import format_lsn

if TYPE_CHECKING:
    from .snapshot_window import SnapshotWindow

_I, _U, _D, _B, _C, _R, _T, _M = (ord(c) for c in "IUDBCRTM")


@dataclass(slots=True)
class Transaction:
    """The transaction being decoded: what its events carry."""

    xid: int = 0
    lsn_text: str = ""  # the commit LSN, as ids and ``cdclsn`` show it
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    commit_ms: int = 0
    pos: int = 0  # the next event's position in the transaction

    def begin(self, b: pg.Begin) -> None:
        self.xid = b.xid
        self.lsn_text = format_lsn(b.final_lsn)
        self.commit_ms = pg.unix_ms(b.commit_ts)
        self.time = pg.pg_time(b.commit_ts)
        self.pos = 0

    def next_id(self) -> str:
        """The next event's id; its position is taken."""
        event_id = f"{self.lsn_text}:{self.pos}"
        self.pos += 1
        return event_id


class ChangeHandler(Protocol):
    """What a row change becomes, and what runs once it is acknowledged:
    :class:`ChangeEvents`, or the outbox relay's routed rows."""

    def on_change(
        self,
        t: TableInfo,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        unchanged: list[str] | None,
        tx: Transaction,
        lsn: int,
        now_ms: int,
        out: list[Out],
    ) -> None:
        """Append the change's records to ``out``; take a position (``tx.next_id()``)
        for every change, emitted or not, so ids stay where they are."""

    async def after_ack(self, conn: psycopg.AsyncConnection[Any], published: int) -> None:
        """After a batch is acknowledged and before the slot advances; ``published`` of
        its records are on their topics (the others are dead letters)."""


class ChangeEvents:
    """Row changes as change events (the ``postgres_cdc`` source)."""

    def __init__(self, capture: Capture) -> None:
        self.builder = capture.builder

    def on_change(
        self,
        t: TableInfo,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        unchanged: list[str] | None,
        tx: Transaction,
        lsn: int,
        now_ms: int,
        out: list[Out],
    ) -> None:
        out.extend(
            self.builder.change(
                t,
                op,
                before,
                after,
                unchanged,
                event_id=tx.next_id(),
                time=tx.time,
                commit_ms=tx.commit_ms,
                commit_lsn=tx.lsn_text,
                xid=tx.xid,
                lsn=lsn,
                now_ms=now_ms,
            )
        )

    async def after_ack(self, conn: psycopg.AsyncConnection[Any], published: int) -> None:
        return None


def _placeholder_unchanged(row: dict[str, Any], placeholder: str) -> None:
    for k, v in row.items():
        if v is pg.UNCHANGED:
            row[k] = placeholder


class TransactionAssembler:
    """Turns one slot's messages into records, transaction by transaction."""

    def __init__(
        self,
        capture: Capture,
        *,
        handler: ChangeHandler,
        window: SnapshotWindow | None,
        emit_messages: bool,
        dead: Callable[[DeadLetter], None],
        log: logging.Logger,
    ) -> None:
        self.capture = capture
        self.builder = capture.builder
        self.registry = capture.registry
        self.handler = handler
        self.window = window
        self.emit_messages = emit_messages
        self.dead = dead
        self.log = log
        self.placeholder = capture.builder.placeholder
        self.tables: dict[int, TableInfo | None] = {}  # relation oid -> info (None: ignored)
        self._relations: dict[bytes, TableInfo | None] = {}  # Relation message -> info
        self.tx = Transaction()
        self.last_commit_at: datetime | None = None

    async def resolve_types(self, conn: psycopg.AsyncConnection[Any], datas: list[bytes]) -> None:
        """Before decoding: look up user types named by new Relation messages."""
        oids: set[int] = set()
        for data in datas:
            if data[0] == _R and data not in self._relations:
                rel = pg.decode(data)
                assert isinstance(rel, pg.Relation)
                oids.update(c.type_oid for c in rel.columns)
        if oids and self.registry.unknown(oids):
            await self.registry.resolve(conn, oids)

    def process(self, lsns: list[int], datas: list[bytes]) -> tuple[list[Out], int]:
        """Decode messages into records.  Returns (records, LSN the slot may advance to
        once they are acknowledged)."""
        out: list[Out] = []
        upto = 0
        now_ms = int(time.time() * 1000)
        tx = self.tx
        window = self.window
        for lsn, data in zip(lsns, datas, strict=True):
            tag = data[0]
            if tag in (_I, _U, _D):
                msg = pg.decode(data)
                t = self.tables.get(msg.relation)  # type: ignore[union-attr]
                if t is None:
                    continue
                pos = tx.pos
                try:
                    self._change(t, msg, lsn, now_ms, out)
                except Exception as exc:
                    if isinstance(exc, pg.ProtocolError) or not is_bad_record(exc):
                        raise  # the stream, or our code, cannot be trusted: stop
                    self._dead_letter(t, msg, f"{tx.lsn_text}:{pos}", exc)
                    tx.pos = max(tx.pos, pos + 1)
            elif tag == _B:
                b = pg.decode(data)
                assert isinstance(b, pg.Begin)
                tx.begin(b)
            elif tag == _C:
                c = pg.decode(data)
                assert isinstance(c, pg.Commit)
                upto = max(upto, c.end_lsn)
                if window is not None:
                    window.on_commit(tx.xid)
                self.last_commit_at = tx.time
            elif tag == _R:
                self._relation(data)
            elif tag == _T:
                tr = pg.decode(data)
                assert isinstance(tr, pg.Truncate)
                for oid in tr.relations:
                    t = self.tables.get(oid)
                    if t is None:
                        continue
                    if window is not None:
                        window.on_truncate(t, tx.xid)
                    out.append(
                        self.builder.truncate(
                            t,
                            event_id=f"{tx.lsn_text}:{tx.pos}",
                            time=tx.time,
                            commit_ms=tx.commit_ms,
                            commit_lsn=tx.lsn_text,
                            xid=tx.xid,
                            lsn=lsn,
                            now_ms=now_ms,
                        )
                    )
                    tx.pos += 1
            elif tag == _M:
                m = pg.decode(data)
                assert isinstance(m, pg.Message)
                if not m.transactional:
                    # pgoutput gives a message the END of its record (the next record's
                    # start): advancing there skips the message, and not what follows it
                    upto = max(upto, m.lsn)
                self._on_message(m, now_ms, out)
            # Type ('Y') and Origin ('O') need nothing: types resolve by OID.
        if window is not None:
            window.trim()
        return out, upto

    def _relation(self, data: bytes) -> None:
        info = self._relations.get(data, ...)
        if info is ...:
            rel = pg.decode(data)
            assert isinstance(rel, pg.Relation)
            qualified = f"{rel.namespace}.{rel.name}"
            if qualified in self.capture.tables:
                info = self.builder.table_info(rel, self.registry, self.capture.keys.get(qualified))
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
        tx = self.tx
        if self.window is not None:
            self.window.on_change(t, tx.xid, before, after)
        handler = self.handler
        if op == "u" and before is not None and t.key_of(before) != t.key_of(after):  # type: ignore[arg-type]
            # The key changed: as Debezium does, a delete of the old key, then a create.
            handler.on_change(t, "d", before, None, None, tx, lsn, now_ms, out)
            handler.on_change(t, "c", None, after, unchanged, tx, lsn, now_ms, out)
            return
        handler.on_change(t, op, before, after, unchanged, tx, lsn, now_ms, out)

    def _on_message(self, m: pg.Message, now_ms: int, out: list[Out]) -> None:
        if m.prefix == HEARTBEAT_PREFIX:
            return
        if m.prefix == WATERMARK_PREFIX:
            if self.window is not None:
                self.window.on_watermark(m, now_ms, out)
            return
        if not self.emit_messages:
            return
        tx = self.tx
        if m.transactional:
            event_id = tx.next_id()
            xid: int | None = tx.xid
            commit_ms, when, commit_lsn = tx.commit_ms, tx.time, tx.lsn_text
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
        self.dead(
            DeadLetter.from_exception(
                exc,
                key=None,
                value=value,
                headers=[("ce_id", event_id.encode())],
                pipeline=self.capture.name,
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
