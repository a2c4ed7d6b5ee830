"""``snapshot: initial_only``: every table read once, in one consistent REPEATABLE
READ transaction, in key chunks, without the log (no slot, no watermarks).

Every event's id is the WAL position read at the start of the transaction and the
row's number (``0/16B3748:r17``), so a second run after a crash sends the same ids.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from .emitting import Emitter
from .events import Capture, Out
from .lsn import parse_lsn
from .snapshot import key_info, select_chunk
from .snapshot_window import read_rows, snapshot_dead_letter


async def snapshot_all(
    conn: psycopg.AsyncConnection[Any],
    tables: list[str],
    *,
    capture: Capture,
    emitter: Emitter,
    chunk_size: int,
) -> int:
    """Publish every row of ``tables``; returns the rows emitted."""
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
            key = await key_info(conn, table, capture.keys[table])
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
                    size=chunk_size,
                    registry=capture.registry,
                )
                t = capture.builder.snapshot_table_info(
                    schema, name, sel.names, sel.type_oids, key.columns, capture.registry
                )
                outs: list[Out] = []
                first = total
                read_rows(
                    capture,
                    t,
                    ((f"{at}:r{first + i}", r) for i, r in enumerate(sel.rows.values())),
                    when=when,
                    read_ms=read_ms,
                    hw=at,
                    hw_lsn=at_lsn,
                    now_ms=int(time.time() * 1000),
                    kind="true",
                    out=outs,
                    dead=emitter.dead_letter,
                )
                total += len(sel.rows)
                for raw, err in sel.errors:
                    emitter.dead_letter(snapshot_dead_letter(capture, t, raw, err))
                await emitter.publish(outs)
                last = sel.last_key
                if sel.count < chunk_size:
                    break
    return total
