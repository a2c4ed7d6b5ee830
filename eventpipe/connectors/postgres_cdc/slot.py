"""The replication slot, read through SQL (psycopg 3 has no replication protocol).

``pg_logical_slot_peek_binary_changes`` reads without consuming; the slot moves
only when :func:`advance` is called, which the reader does after the broker
acknowledged everything before that point.  A crash in between re-reads, and
re-sends, the same changes with the same ids.

``upto_nchanges`` is checked at transaction boundaries, so a peek returns whole
transactions (a single large one is returned whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .lsn import format_lsn, parse_lsn

PLUGIN = "pgoutput"
PROTO_VERSION = "1"

_PEEK = (
    "select lsn, data from pg_logical_slot_peek_binary_changes(%s, NULL, %s, "
    "'proto_version', '" + PROTO_VERSION + "', 'publication_names', %s, 'messages', 'true')"
)
_ADVANCE = "select pg_replication_slot_advance(%s, %s::pg_lsn)"
_FLUSH = "select pg_current_wal_flush_lsn()::text"
_DRAIN = (
    "select count(*) from pg_logical_slot_get_binary_changes(%s, NULL, NULL, "
    "'proto_version', '" + PROTO_VERSION + "', 'publication_names', %s, 'messages', 'true')"
)


@dataclass(frozen=True, slots=True)
class SlotInfo:
    name: str
    plugin: str | None
    slot_type: str
    database: str | None
    active: bool
    active_pid: int | None
    restart_lsn: int | None
    confirmed_flush_lsn: int | None
    wal_status: str | None
    lag_bytes: int | None  # current WAL insert position - confirmed_flush_lsn


async def peek(
    conn: psycopg.AsyncConnection[Any], slot: str, publication: str, limit: int
) -> tuple[list[int], list[bytes]]:
    """Up to ``limit`` changes (rounded up to whole transactions) after the slot's
    confirmed position: (their LSNs, their pgoutput messages)."""
    cur = conn.cursor(binary=True)
    try:
        await cur.execute(_PEEK, (slot, limit, publication))
        res = cur.pgresult
        assert res is not None
        get = res.get_value
        n = res.ntuples
        from_bytes = int.from_bytes
        lsns = [from_bytes(get(i, 0), "big") for i in range(n)]  # type: ignore[arg-type]
        datas: list[bytes] = [get(i, 1) for i in range(n)]  # type: ignore[misc]
    finally:
        await cur.close()
    return lsns, datas


async def read(
    conn: psycopg.AsyncConnection[Any],
    slot: str,
    publication: str,
    limit: int,
    *,
    advance_to: int | None,
    peek: bool,
) -> tuple[int, list[int], list[bytes]]:
    """In one round trip (pipeline mode), in this order: advance the slot to
    ``advance_to`` (what was acknowledged), read the WAL flush position, and peek
    (when ``peek``).  Returns (flush position, LSNs, messages)."""
    cur = conn.cursor(binary=True)
    try:
        async with conn.pipeline():
            if advance_to is not None:
                await conn.execute(_ADVANCE, (slot, format_lsn(advance_to)))
            fcur = await conn.execute(_FLUSH)
            if peek:
                await cur.execute(_PEEK, (slot, limit, publication))
        row = await fcur.fetchone()
        assert row is not None
        flush = parse_lsn(row[0])
        if not peek:
            return flush, [], []
        res = cur.pgresult
        assert res is not None
        get = res.get_value
        n = res.ntuples
        from_bytes = int.from_bytes
        lsns = [from_bytes(get(i, 0), "big") for i in range(n)]  # type: ignore[arg-type]
        datas: list[bytes] = [get(i, 1) for i in range(n)]  # type: ignore[misc]
        return flush, lsns, datas
    finally:
        await cur.close()


async def drain_count(conn: psycopg.AsyncConnection[Any], slot: str, publication: str) -> int:
    """Consume everything in the slot without decoding it (the benchmark's slot ceiling)."""
    cur = await conn.execute(_DRAIN, (slot, publication))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def advance(conn: psycopg.AsyncConnection[Any], slot: str, lsn: int) -> None:
    await conn.execute(
        "select pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, format_lsn(lsn))
    )


async def flush_lsn(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("select pg_current_wal_flush_lsn()::text")
    row = await cur.fetchone()
    assert row is not None
    return parse_lsn(row[0])


async def emit_message(
    conn: psycopg.AsyncConnection[Any], prefix: str, content: str, *, transactional: bool = False
) -> int:
    """``pg_logical_emit_message``; returns the message's LSN."""
    cur = await conn.execute(
        "select pg_logical_emit_message(%s, %s, %s)::text", (transactional, prefix, content)
    )
    row = await cur.fetchone()
    assert row is not None
    return parse_lsn(row[0])


def _lsn(v: str | None) -> int | None:
    return parse_lsn(v) if v else None


_INFO = """
select slot_name::text, plugin::text, slot_type, database::text, active, active_pid,
       restart_lsn::text, confirmed_flush_lsn::text, wal_status,
       case when confirmed_flush_lsn is null then null
            else pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint end
from pg_replication_slots
"""


def _info(row: tuple[Any, ...]) -> SlotInfo:
    return SlotInfo(
        name=row[0],
        plugin=row[1],
        slot_type=row[2],
        database=row[3],
        active=bool(row[4]),
        active_pid=row[5],
        restart_lsn=_lsn(row[6]),
        confirmed_flush_lsn=_lsn(row[7]),
        wal_status=row[8],
        lag_bytes=None if row[9] is None else int(row[9]),
    )


async def slot_info(conn: psycopg.AsyncConnection[Any], slot: str) -> SlotInfo | None:
    cur = await conn.execute(_INFO + " where slot_name = %s", (slot,))
    row = await cur.fetchone()
    return _info(row) if row else None


async def list_slots(conn: psycopg.AsyncConnection[Any]) -> list[SlotInfo]:
    cur = await conn.execute(_INFO + " where slot_type = 'logical' order by slot_name")
    return [_info(r) for r in await cur.fetchall()]


async def create_slot(conn: psycopg.AsyncConnection[Any], slot: str) -> int:
    """Create a pgoutput slot; returns its consistent point.  Waits for transactions
    running at that moment to end (PostgreSQL needs that for a consistent start)."""
    cur = await conn.execute(
        "select lsn::text from pg_create_logical_replication_slot(%s, %s)", (slot, PLUGIN)
    )
    row = await cur.fetchone()
    assert row is not None
    return parse_lsn(row[0])


async def drop_slot(conn: psycopg.AsyncConnection[Any], slot: str) -> None:
    await conn.execute("select pg_drop_replication_slot(%s)", (slot,))


async def publication_tables(
    conn: psycopg.AsyncConnection[Any], publication: str
) -> set[str] | None:
    """schema.table names in the publication, or None when it does not exist."""
    cur = await conn.execute("select 1 from pg_publication where pubname = %s", (publication,))
    if await cur.fetchone() is None:
        return None
    cur = await conn.execute(
        "select schemaname || '.' || tablename from pg_publication_tables where pubname = %s",
        (publication,),
    )
    return {r[0] for r in await cur.fetchall()}


def table_list(tables: list[tuple[str, str]]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(s, t) for s, t in tables)
