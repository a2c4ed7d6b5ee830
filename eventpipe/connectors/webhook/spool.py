"""``spool: postgres``: when the broker is down, requests are stored in Postgres and
relayed to the broker later, in order.

* :class:`Spool` writes each request's records, and its delivery ids for dedup,
  in one transaction; concurrent requests share one transaction (group commit).
  The request is answered 202 only after that commit.  A row Postgres refuses
  (``DataError``) fails only its own request: the shared transaction is retried
  with a savepoint per request, and the others commit.
* :class:`SpoolState` routes requests: once a write to the broker failed, every
  new request goes to the spool (so nothing overtakes what is already there)
  until the relay has emptied it.
* :class:`Relay` reads the oldest rows (one relay per source across instances, by
  a transaction-level advisory lock), publishes them in order, waits for the
  broker's acknowledgement, then deletes them in the same transaction.  A crash
  in between re-sends them with the same ids (at least once).  Failures back off
  (:class:`eventpipe.relay.RelayLoop`); an error no class explains (a bug) stops
  the relay, and the webhook source reports it (the service exits 3).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from eventpipe import metrics
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.errors import PermanentError
from eventpipe.publisher import PublishBatchError, Publisher
from eventpipe.relay import Backoff, RelayLoop

from .batching import Coalescer
from .delivery_ids import RECORD_SQL, json_list

log = logging.getLogger("eventpipe.webhook")
LOCK_NAMESPACE = 0x77_68_73_70  # "whsp"

INSERT_SQL = """
insert into eventpipe.webhook_spool (source, topic, event_id, key, value, headers)
select %s, t, i, k, v, h
  from unnest(%s::text[], %s::text[], %s::bytea[], %s::bytea[], %s::jsonb[]) as u(t, i, k, v, h)
"""
LOCK_SQL = "select pg_try_advisory_xact_lock(%s, hashtext(%s))"
SELECT_SQL = """
select id, topic, event_id, key, value, headers from eventpipe.webhook_spool
 where source = %s order by id limit %s
"""
DELETE_SQL = "delete from eventpipe.webhook_spool where source = %s and id = any(%s)"
COUNT_SQL = "select count(*) from eventpipe.webhook_spool where source = %s"


class UnstorableRowError(PermanentError):
    """Postgres refused this request's row (its ``__cause__`` says why)."""


class SpoolRecord(NamedTuple):
    topic: str
    event_id: str
    message: KafkaMessage


class SpoolWrite(NamedTuple):
    records: list[SpoolRecord]
    dedup_keys: list[str]


@dataclass
class SpoolState:
    """Where this source's requests go now; shared by the handler and the relay."""

    active: bool = False
    writes: int = 0  # spool writes started, ever
    inflight: int = 0  # spool writes not yet committed
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def _headers_json(headers: list[tuple[str, bytes]]) -> Jsonb:
    return Jsonb([[k, v.decode("utf-8", "surrogateescape")] for k, v in headers])


def _headers_from(value: Any) -> list[tuple[str, bytes]]:
    if isinstance(value, str | bytes):
        value = orjson.loads(value)
    return [(str(k), str(v).encode("utf-8", "surrogateescape")) for k, v in value]


class Spool:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        source: str,
        state: SpoolState,
        *,
        dedup: bool,
        timeout_s: float,
    ) -> None:
        self.pool = pool
        self.source = source
        self.state = state
        self.dedup = dedup
        self.timeout_s = timeout_s
        self._writer = Coalescer(self._write_batch, max_batch=1000, name="spool")

    async def pending(self) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(COUNT_SQL, (self.source,))
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def write(self, records: list[SpoolRecord], dedup_keys: list[str]) -> None:
        """Store one request's records; returns after the commit."""
        state = self.state
        state.writes += 1
        state.inflight += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                refused = await self._writer.submit(SpoolWrite(records, dedup_keys))
            if refused is not None:
                raise UnstorableRowError(
                    f"webhook {self.source}: the spool refused a row ({type(refused).__name__})"
                ) from refused
        finally:
            state.inflight -= 1
            state.wake.set()
        metrics.WEBHOOK_SPOOLED.labels(source=self.source).inc(len(records))

    async def _write_batch(self, writes: list[SpoolWrite]) -> list[psycopg.DataError | None]:
        """One transaction for every write; the Postgres error of each write whose
        row was refused (the others are committed all the same)."""
        async with self.pool.connection() as conn:
            try:
                async with conn.transaction():
                    await self._insert(conn, writes)
                return [None] * len(writes)
            except psycopg.DataError as exc:
                if len(writes) == 1:
                    return [exc]
            refused: list[psycopg.DataError | None] = []
            async with conn.transaction():
                for write in writes:
                    try:
                        async with conn.transaction():  # a savepoint
                            await self._insert(conn, [write])
                        refused.append(None)
                    except psycopg.DataError as exc:
                        refused.append(exc)
            return refused

    async def _insert(self, conn: psycopg.AsyncConnection[Any], writes: list[SpoolWrite]) -> None:
        topics, ids, keys, values, headers = [], [], [], [], []
        dedup_keys: list[str] = []
        for w in writes:
            for r in w.records:
                topics.append(r.topic)
                ids.append(r.event_id)
                keys.append(r.message.key)
                values.append(r.message.value)
                headers.append(_headers_json(r.message.headers))
            dedup_keys.extend(w.dedup_keys)
        await conn.execute(INSERT_SQL, (self.source, topics, ids, keys, values, headers))
        if self.dedup and dedup_keys:
            await conn.execute(RECORD_SQL, (self.source, json_list(dedup_keys)))

    async def drain(self) -> None:
        await self._writer.drain()


class Relay:
    """Moves spooled rows to the broker, oldest first; one instance per source at a
    time.  ``idle_interval_s`` bounds how late rows left by another (crashed)
    instance are picked up."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        source: str,
        state: SpoolState,
        publisher: Publisher,
        *,
        batch: int = 500,
        interval_s: float = 0.5,
        idle_interval_s: float = 5.0,
    ) -> None:
        self.pool = pool
        self.source = source
        self.state = state
        self.publisher = publisher
        self.batch = batch
        self.interval_s = interval_s
        self.idle_interval_s = idle_interval_s
        self.loop = RelayLoop(
            f"webhook {source}: spool relay",
            self._session,
            backoff=Backoff(initial_s=interval_s, retriable_cap_s=10.0, permanent_cap_s=10.0),
            log=log,
            level=logging.WARNING,  # the broker is down: that is what the spool is for
        )

    async def start(self) -> None:
        await self.loop.start()

    async def stop(self) -> None:
        """At once: a batch cut short is rolled back and relayed again, with its ids."""
        await self.loop.stop(grace_s=0)

    async def _session(self, relay: RelayLoop) -> None:
        state = self.state
        while not relay.stopping:
            snapshot = state.writes
            state.wake.clear()
            moved = await self.relay_once()
            relay.made_progress()
            if moved < 0:
                relay.standby()  # another instance relays this source's spool
            else:
                relay.running()
            if moved > 0:
                continue
            if moved == 0 and state.active and state.inflight == 0 and state.writes == snapshot:
                state.active = False  # empty, and nothing was spooled meanwhile: go direct
                log.info("webhook %s: spool empty, writing to the broker directly", self.source)
            wait = self.interval_s if state.active else self.idle_interval_s
            await relay.sleep(wait, wake=state.wake)

    async def relay_once(self) -> int:
        """Publish and delete the oldest rows.  Returns how many moved, 0 when empty,
        -1 when another instance holds this source's relay lock."""
        failure: BaseException | None = None
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(LOCK_SQL, (LOCK_NAMESPACE, self.source))
            locked = await cur.fetchone()
            if not locked or not locked[0]:
                return -1
            cur = await conn.execute(SELECT_SQL, (self.source, self.batch))
            rows = await cur.fetchall()
            if not rows:
                return 0
            done: list[int] = []
            start = 0
            while start < len(rows):  # contiguous runs of one topic, in order
                topic = rows[start][1]
                end = start
                while end < len(rows) and rows[end][1] == topic:
                    end += 1
                run = rows[start:end]
                msgs = [KafkaMessage(r[3], r[4], _headers_from(r[5])) for r in run]
                try:
                    await self.publisher.publish_messages(
                        topic, msgs, [r[2] for r in run], via="webhook-spool"
                    )
                except PublishBatchError as exc:
                    prefix = 0
                    while prefix in exc.acked:
                        prefix += 1
                    done.extend(r[0] for r in run[:prefix])
                    failure = exc
                    break
                except Exception as exc:
                    failure = exc
                    break
                done.extend(r[0] for r in run)
                start = end
            if done:
                await conn.execute(DELETE_SQL, (self.source, done))
        if done:
            metrics.WEBHOOK_RELAYED.labels(source=self.source).inc(len(done))
        if failure is not None:
            raise failure
        return len(done)
