"""Snapshots in primary-key chunks, interleaved with the log (DBLog / Debezium
incremental snapshots), so the stream keeps flowing while a big table is read.

For each chunk, between two slot reads (everything before the reader's position
P is acknowledged):

1. read the chunk (``key > last and key <= max`` in key order, ``limit n``) in a
   short REPEATABLE READ transaction, together with its MVCC snapshot S
   (``pg_current_snapshot()``);
2. write a high watermark, a non-transactional logical message, at H;
3. keep reading the log from P.  A change to a chunk row by a transaction S did
   not see is newer than what the chunk read, so the row is dropped from the
   chunk (the change event carries the newer state); changes S saw are older than
   or equal to the chunk's row and are emitted as they come;
4. at the high watermark, the rows left are emitted as ``op: r`` events.

The window opens at P rather than at a low-watermark message: with the MVCC
snapshot in hand, "did the chunk see this change" is answered exactly by the
change's transaction id, which also covers a transaction whose commit record
precedes the read but that was not yet visible to it.  Every transaction the
reader already emitted must be visible to S (else the chunk could hold a row
older than an emitted change); :meth:`MvccSnapshot.sees_all` checks that and the
chunk is read again if not.

Hence a row changed during the snapshot is never emitted stale after its change.

A ``--where`` filter is SQL text spliced into the chunk query, so it must stay one
expression inside its parentheses: ``true) or (true`` would otherwise reach the
key range around it and make every chunk read the whole table again.
:func:`check_filter` lets PostgreSQL itself decide: the filter must parse and type
as a boolean both inside ``( ... )`` and inside ``array[ ... ]``.  Escaping one of
those brackets needs an unmatched closing ``)`` or ``]``, which the other one does
not parse; quotes and comments are the server's lexer's business, and newlines
around the filter end a ``--`` comment before our own closing bracket.  The check
runs when the CLI queues the snapshot and again when the source starts it; every
query that evaluates the filter runs in a read-only transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from eventpipe.errors import PermanentError, is_bad_record

from .config import parse_table
from .types import Converter, TypeRegistry

_XID_MOD = 1 << 32


def xid_precedes(a: int, b: int) -> bool:
    """32-bit transaction id order, modulo wraparound (TransactionIdPrecedes)."""
    return a != b and ((a - b) % _XID_MOD) >= (1 << 31)


@dataclass(frozen=True, slots=True)
class MvccSnapshot:
    """``pg_current_snapshot()``: xmin:xmax:xip,... (64-bit); compared on 32-bit xids
    as pgoutput sends them."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> MvccSnapshot:
        xmin, xmax, xip = text.split(":")
        return cls(
            int(xmin) % _XID_MOD,
            int(xmax) % _XID_MOD,
            frozenset(int(x) % _XID_MOD for x in xip.split(",") if x),
        )

    def visible(self, xid: int) -> bool:
        """Were this transaction's effects visible to the snapshot?"""
        if xid_precedes(xid, self.xmin):
            return True
        if not xid_precedes(xid, self.xmax):
            return False
        return xid not in self.xip

    def sees_all(self, xids: Iterable[int]) -> bool:
        return all(self.visible(x) for x in xids)


@dataclass(slots=True)
class Chunk:
    task_id: int
    table: str  # schema.table
    snapshot: MvccSnapshot
    names: list[str]
    type_oids: list[int]
    rows: dict[tuple[Any, ...], dict[str, Any]]  # key -> row, in key order
    last_key: list[str] | None  # text forms of the last row's key (progress)
    done: bool  # no rows after this chunk
    read_at_ms: int
    hw_lsn: int | None = None
    dropped: int = 0
    marker: str = ""
    errors: list[tuple[dict[str, str | None], Exception]] = field(default_factory=list)

    def on_change(self, xid: int, keys: Iterable[tuple[Any, ...]]) -> None:
        """A change to this chunk's table in transaction ``xid``, touching ``keys``."""
        if self.snapshot.visible(xid):
            return
        for k in keys:
            if self.rows.pop(k, None) is not None:
                self.dropped += 1

    def on_truncate(self, xid: int) -> None:
        if not self.snapshot.visible(xid):
            self.dropped += len(self.rows)
            self.rows.clear()


@dataclass(slots=True)
class KeyInfo:
    columns: list[str]
    types: list[str]  # format_type(), for casting the saved text forms back


async def key_info(conn: psycopg.AsyncConnection[Any], table: str, key: list[str]) -> KeyInfo:
    schema, name = parse_table(table)
    cur = await conn.execute(
        "select a.attname::text, format_type(a.atttypid, a.atttypmod)"
        " from pg_attribute a join pg_class c on c.oid = a.attrelid"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and a.attname = any(%s)",
        (schema, name, key),
    )
    types = {r[0]: r[1] for r in await cur.fetchall()}
    return KeyInfo(list(key), [types[c] for c in key])


class SnapshotFilterError(PermanentError):
    """A snapshot's ``where`` is not one boolean expression over its table's columns."""


def _filter(where: str, *, params: bool) -> sql.Composable:
    """The filter in parentheses, on lines of its own (a ``--`` comment ends before our
    closing parenthesis); with ``params`` its ``%`` are not placeholders."""
    return sql.SQL("(\n{}\n)").format(sql.SQL(where.replace("%", "%%") if params else where))


async def check_filter(conn: psycopg.AsyncConnection[Any], table: str, where: str) -> None:
    """Raise :class:`SnapshotFilterError` (with PostgreSQL's reason) unless ``where`` is
    one boolean expression over ``table``'s columns.  Read-only, reads no row; sent
    without parameters, so ``$1`` in the filter is refused too."""
    schema, name = parse_table(table)
    target = sql.Identifier(schema, name)
    checks = (
        sql.SQL("select array[\n{}\n] from {} limit 0").format(sql.SQL(where), target),
        sql.SQL("select 1 from {} where {} limit 0").format(target, _filter(where, params=False)),
    )
    try:
        async with conn.transaction():
            await conn.execute("set transaction read only")
            for q in checks:
                await conn.execute(q)
    except (psycopg.ProgrammingError, psycopg.DataError, psycopg.InternalError) as exc:
        reason = (exc.diag.message_primary or str(exc)).strip()
        raise SnapshotFilterError(
            f"{where!r} is not one boolean SQL expression over the columns of {table}: {reason}"
        ) from exc


def _key_expr(k: KeyInfo) -> sql.Composable:
    return sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in k.columns))


def _key_params(k: KeyInfo) -> sql.Composable:
    return sql.SQL("({})").format(sql.SQL(", ").join(sql.SQL("%s::") + sql.SQL(t) for t in k.types))


def _where(
    k: KeyInfo, last: list[str] | None, upto: list[str] | None, extra: str | None
) -> tuple[sql.Composable, list[str]]:
    parts: list[sql.Composable] = []
    params: list[str] = []
    if last is not None:
        parts.append(sql.SQL("{} > {}").format(_key_expr(k), _key_params(k)))
        params.extend(last)
    if upto is not None:
        parts.append(sql.SQL("{} <= {}").format(_key_expr(k), _key_params(k)))
        params.extend(upto)
    if extra:
        parts.append(_filter(extra, params=True))
    if not parts:
        return sql.SQL(""), params
    return sql.SQL(" where ") + sql.SQL(" and ").join(parts), params


def _order(k: KeyInfo, desc: bool = False) -> sql.Composable:
    d = sql.SQL(" desc" if desc else "")
    return sql.SQL(" order by ") + sql.SQL(", ").join(sql.Identifier(c) + d for c in k.columns)


async def max_key(
    conn: psycopg.AsyncConnection[Any], table: str, k: KeyInfo, where: str | None
) -> list[str] | None:
    """Text forms of the largest key (None for an empty table): the snapshot stops there;
    rows inserted later reach the topic through the log.  Read-only (the filter runs)."""
    schema, name = parse_table(table)
    cond, params = _where(k, None, None, where)
    q = (
        sql.SQL("select {} from {}").format(
            # aliased: ORDER BY must see the columns, not their text forms
            sql.SQL(", ").join(
                sql.SQL("{}::text as {}").format(sql.Identifier(c), sql.Identifier(f"_k{i}"))
                for i, c in enumerate(k.columns)
            ),
            sql.Identifier(schema, name),
        )
        + cond
        + _order(k, desc=True)
        + sql.SQL(" limit 1")
    )
    async with conn.transaction():
        await conn.execute("set transaction read only")
        cur = await conn.execute(q, params)
        row = await cur.fetchone()
    return list(row) if row else None


def _convert_rows(
    res: Any,
    names: list[str],
    convs: list[Converter],
    key_idx: list[int],
) -> tuple[
    dict[tuple[Any, ...], dict[str, Any]],
    list[str] | None,
    list[tuple[dict[str, str | None], Exception]],
]:
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    errors: list[tuple[dict[str, str | None], Exception]] = []
    last: list[str] | None = None
    get = res.get_value
    ncols = len(names)
    for i in range(res.ntuples):
        raws = [get(i, j) for j in range(ncols)]
        last = [raws[j].decode("utf-8") for j in key_idx]
        try:
            row = {
                n: None if r is None else c(r) for n, c, r in zip(names, convs, raws, strict=True)
            }
        except Exception as exc:  # a value the converters cannot take: dead letter
            if not is_bad_record(exc):
                raise  # a bug in a converter is no bad row
            errors.append(
                (
                    {
                        n: None if r is None else r.decode("utf-8", "replace")
                        for n, r in zip(names, raws, strict=True)
                    },
                    exc,
                )
            )
            continue
        rows[tuple(row[names[j]] for j in key_idx)] = row
    return rows, last, errors


@dataclass(slots=True)
class Selected:
    names: list[str]
    type_oids: list[int]
    rows: dict[tuple[Any, ...], dict[str, Any]]
    last_key: list[str] | None
    count: int
    errors: list[tuple[dict[str, str | None], Exception]]


async def select_chunk(
    conn: psycopg.AsyncConnection[Any],
    *,
    table: str,
    key: KeyInfo,
    last_key: list[str] | None,
    upto: list[str] | None,
    where: str | None,
    size: int,
    registry: TypeRegistry,
) -> Selected:
    """The next ``size`` rows after ``last_key`` (in the caller's transaction)."""
    schema, name = parse_table(table)
    cond, params = _where(key, last_key, upto, where)
    q = (
        sql.SQL("select * from {}").format(sql.Identifier(schema, name))
        + cond
        + _order(key)
        + sql.SQL(" limit {}").format(sql.Literal(size))
    )
    cur = conn.cursor()
    try:
        await cur.execute(q, params)
        res = cur.pgresult
        assert res is not None
        names = [(res.fname(j) or b"").decode("utf-8") for j in range(res.nfields)]
        oids = [res.ftype(j) for j in range(res.nfields)]
        await registry.resolve(conn, oids)
        convs = [registry.converter(o) for o in oids]
        key_idx = [names.index(c) for c in key.columns]
        rows, last, errors = _convert_rows(res, names, convs, key_idx)
        return Selected(names, oids, rows, last if res.ntuples else last_key, res.ntuples, errors)
    finally:
        await cur.close()


async def read_chunk(
    conn: psycopg.AsyncConnection[Any],
    *,
    task_id: int,
    table: str,
    key: KeyInfo,
    last_key: list[str] | None,
    upto: list[str] | None,
    where: str | None,
    size: int,
    registry: TypeRegistry,
    now_ms: int,
) -> Chunk:
    """One chunk and the MVCC snapshot it was read in (``conn`` in autocommit)."""
    async with conn.transaction():
        await conn.execute("set transaction isolation level repeatable read, read only")
        cur = await conn.execute("select pg_current_snapshot()::text")
        snap_row = await cur.fetchone()
        assert snap_row is not None
        sel = await select_chunk(
            conn,
            table=table,
            key=key,
            last_key=last_key,
            upto=upto,
            where=where,
            size=size,
            registry=registry,
        )
    return Chunk(
        task_id=task_id,
        table=table,
        snapshot=MvccSnapshot.parse(snap_row[0]),
        names=sel.names,
        type_oids=sel.type_oids,
        rows=sel.rows,
        last_key=sel.last_key,
        done=sel.count < size,
        read_at_ms=now_ms,
        errors=sel.errors,
    )
