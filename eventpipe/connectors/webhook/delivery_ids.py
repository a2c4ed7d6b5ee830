"""Delivery-id dedup, backed by Postgres and batched.

``seen(key)`` answers from a small in-memory set of recently stored ids, else
from one query shared by every request that asks in the same moment (group
commit, :mod:`.batching`), on a few dedicated autocommit connections (no pool
checkout, no extra COMMIT round trip on the hot path).  ``remember(keys)`` is
called after the broker acknowledged; those ids are written with the next check
(one statement does both) or within ``flush_s``, not awaited by the request: if
they are lost (a crash), a redelivery is produced again with the same id and
downstream dedup on id is the backstop.  Ids older than the window are pruned in
the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
import psycopg

from .batching import Coalescer

log = logging.getLogger("eventpipe.webhook")
PRUNE_CHUNK = 5000

# Id lists travel as one JSON text parameter: psycopg adapts it in one step, where
# a Python list is adapted element by element (about half the client CPU per query).
RECORD_SQL = """
insert into eventpipe.webhook_dedup (source, delivery_id, seen_at)
select %s, d, now() from jsonb_array_elements_text(%s::jsonb) as d
on conflict (source, delivery_id) do update set seen_at = excluded.seen_at
"""
# The ids to record ride along with the next check.  The check cannot see rows the
# same statement inserts (one snapshot), which is fine: those were stored earlier
# by this instance, and its in-memory set answers for them.  Ids are looked up by
# the primary key only; whether a row is inside the window is a column of the
# answer, not a condition: with ``seen_at`` in the WHERE clause, statistics that
# do not know a new source yet made the planner walk the (source, seen_at) index
# over every id of the window, on every check (3.4 ms for 10k ids, and growing).
CHECK_AND_RECORD_SQL = """
with recorded as (
  insert into eventpipe.webhook_dedup (source, delivery_id, seen_at)
  select %s, d, now() from jsonb_array_elements_text(%s::jsonb) as d
  on conflict (source, delivery_id) do update set seen_at = excluded.seen_at
)
select delivery_id, seen_at > now() - make_interval(secs => %s) from eventpipe.webhook_dedup
 where source = %s and delivery_id = any(array(select jsonb_array_elements_text(%s::jsonb)))
"""
PRUNE_SQL = """
delete from eventpipe.webhook_dedup where ctid = any(array(
  select ctid from eventpipe.webhook_dedup
   where source = %s and seen_at < now() - make_interval(secs => %s) limit %s))
"""


def json_list(keys: list[str]) -> str:
    """Distinct keys as a JSON array text (duplicates would make ON CONFLICT DO UPDATE
    touch a row twice)."""
    return orjson.dumps(list(dict.fromkeys(keys))).decode()


class RecentIds:
    """A bounded insertion-ordered set (oldest dropped first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def add(self, key: str) -> None:
        if self.capacity <= 0:
            return
        self._ids[key] = None
        self._ids.move_to_end(key)
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


class Connections:
    """A few dedicated autocommit connections, opened on demand; one that failed or
    was interrupted mid-statement is closed, not reused.

    They run with ``synchronous_commit = off``: a check that records ids is a write,
    and waiting for its WAL flush would put a disk sync on every request's path.
    The most a database crash can lose is the last moments of recorded ids, so a
    redelivery may be produced again (same id; downstream dedup is the backstop).
    The spool, which holds the requests themselves, commits synchronously."""

    def __init__(self, conninfo: str, *, connect_timeout_s: float) -> None:
        self._conninfo = conninfo
        self._timeout = max(1, int(connect_timeout_s))
        self._free: list[psycopg.AsyncConnection[Any]] = []

    @contextlib.asynccontextmanager
    async def get(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        conn = self._free.pop() if self._free else await self._connect()
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        if conn.closed:
            return
        self._free.append(conn)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=self._timeout
        )
        try:
            await conn.execute("set synchronous_commit = off")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def close(self) -> None:
        free, self._free = self._free, []
        for conn in free:
            with contextlib.suppress(Exception):
                await conn.close()


class Dedup:
    """Checks go to Postgres in batches; ids to record ride along with the next
    check (one statement for both), or are flushed on their own after
    ``flush_s`` when no check comes."""

    def __init__(
        self,
        conninfo: str,
        source: str,
        *,
        window_s: int,
        cache_size: int,
        timeout_s: float = 2.0,
        connect_timeout_s: float = 5.0,
        flush_s: float = 0.1,
        max_pending: int = 50_000,
    ) -> None:
        self.db = Connections(conninfo, connect_timeout_s=connect_timeout_s)
        self.source = source
        self.window_s = window_s
        self.timeout_s = timeout_s
        self.flush_s = flush_s
        self.max_pending = max_pending
        self.recent = RecentIds(cache_size)
        self._check = Coalescer(self._check_batch, max_batch=1000, max_inflight=2, name="dedup")
        self._pending: list[str] = []
        self._checked_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._prune_loop()), loop.create_task(self._flusher())]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._check.drain()
            await self.flush()
        await self.db.close()

    # ---------------------------------------------------------------- check
    async def seen(self, key: str) -> bool:
        """True when ``key`` was stored within the window.  Raises when the database
        cannot answer (the caller decides; the source lets the request through)."""
        if key in self.recent:
            return True
        return await self._check.submit(key)

    async def _check_batch(self, keys: list[str]) -> list[bool]:
        records, self._pending = self._pending, []
        self._checked_at = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self.timeout_s), self.db.get() as conn:
                cur = await conn.execute(
                    CHECK_AND_RECORD_SQL,
                    (self.source, json_list(records), self.window_s, self.source, json_list(keys)),
                )
                found = {key for key, recent in await cur.fetchall() if recent}
        except BaseException:
            self._requeue(records)
            raise
        return [k in found for k in keys]

    # --------------------------------------------------------------- record
    def remember(self, keys: Iterable[str]) -> None:
        """Note stored ids: at once in memory, in Postgres with the next check."""
        for key in keys:
            self.recent.add(key)
            self._pending.append(key)

    def _requeue(self, records: list[str]) -> None:
        if len(self._pending) + len(records) <= self.max_pending:
            self._pending[:0] = records
        else:
            log.warning(
                "webhook %s: %d delivery id(s) not recorded; a redelivery to another "
                "instance may be produced again",
                self.source,
                len(records),
            )

    async def flush(self) -> None:
        """Record what is pending now, without a check."""
        records, self._pending = self._pending, []
        if not records:
            return
        try:
            async with asyncio.timeout(self.timeout_s * 5), self.db.get() as conn:
                await conn.execute(RECORD_SQL, (self.source, json_list(records)))
        except Exception as exc:
            log.warning(
                "webhook %s: recording delivery ids failed (%s); retrying",
                self.source,
                type(exc).__name__,
            )
            self._requeue(records)

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.flush_s)
            if self._pending and loop.time() - self._checked_at >= self.flush_s:
                await self.flush()

    # ---------------------------------------------------------------- prune
    async def _prune_loop(self) -> None:
        interval = min(max(self.window_s / 10, 5.0), 300.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.prune()
            except Exception as exc:
                log.warning("webhook %s: pruning dedup ids failed: %s", self.source, exc)

    async def prune(self) -> int:
        total = 0
        while True:
            async with self.db.get() as conn:
                cur = await conn.execute(PRUNE_SQL, (self.source, self.window_s, PRUNE_CHUNK))
                n = cur.rowcount
            total += n
            if n < PRUNE_CHUNK:
                return total
