"""One active reader per slot: a session-level advisory lock on the reader's own
connection (ARCHITECTURE.md section 8).

The reader peeks and advances on the connection that holds the lock, so if that
connection dies the lock is gone and so is the reader's ability to advance; a
standby polling :func:`try_lock` then takes over.  PostgreSQL releases the lock
as soon as the holder's session ends, including after a kill -9 of the holder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg

LOCK_CLASS = 0x45_50_43  # "EPC": eventpipe CDC, the first half of the two-key lock


async def try_lock(conn: psycopg.AsyncConnection[Any], key: str) -> bool:
    cur = await conn.execute("select pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, key))
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock(conn: psycopg.AsyncConnection[Any], key: str) -> None:
    await conn.execute("select pg_advisory_unlock(%s, hashtext(%s))", (LOCK_CLASS, key))


async def holder_pid(conn: psycopg.AsyncConnection[Any], key: str) -> int | None:
    """The backend pid holding the lock, if any (for status and logs)."""
    cur = await conn.execute(
        "select pid from pg_locks where locktype = 'advisory' and classid = %s"
        " and objid = hashtext(%s)::oid and objsubid = 2 and granted",
        (LOCK_CLASS, key),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else None


async def wait_for_lock(
    conn: psycopg.AsyncConnection[Any],
    key: str,
    poll_s: float,
    *,
    stopping: Callable[[], bool],
    on_standby: Callable[[int | None], None] | None = None,
) -> bool:
    """Poll until this session holds the lock (True) or ``stopping()`` (False)."""
    first = True
    while not stopping():
        if await try_lock(conn, key):
            return True
        if first and on_standby is not None:
            on_standby(await holder_pid(conn, key))
        first = False
        await asyncio.sleep(poll_s)
    return False
