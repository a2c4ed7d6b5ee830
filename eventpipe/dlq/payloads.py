"""Dead-letter values too large for the broker, kept in Postgres (migration 0012).

A claim check: the dead letter goes to its topic without a value, with the headers
``eventpipe.dlq.payload.ref`` (the value's SHA-256, hex: the row in
``eventpipe.dlq_payloads``) and ``eventpipe.dlq.payload.size``.  Rows are keyed by
content, so writing one twice (a batch sent again after a crash) stores it once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from eventpipe.dlq.reader import Entry, decode_entry

log = logging.getLogger(__name__)


def ref_of(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


async def keep(pool: AsyncConnectionPool, values: Sequence[bytes]) -> list[str]:
    """Store ``values``; returns their refs once committed."""
    refs = [ref_of(v) for v in values]
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.executemany(
            "insert into eventpipe.dlq_payloads (ref, value, size) values (%s, %s, %s)"
            " on conflict (ref) do nothing",
            [(r, v, len(v)) for r, v in zip(refs, values, strict=True)],
        )
    log.info("kept %d dead-letter value(s) too large for the broker in Postgres", len(refs))
    return refs


async def fetch(conn: AsyncConnection[Any], refs: Iterable[str]) -> dict[str, bytes]:
    cur = await conn.execute(
        "select ref, value from eventpipe.dlq_payloads where ref = any(%s)", (list(refs),)
    )
    return {ref: bytes(value) for ref, value in await cur.fetchall()}


async def resolve(pool: AsyncConnectionPool, entry: Entry) -> Entry:
    """The entry with its kept value in place (as it is when the value is on the topic,
    or when the row is gone: ``to_doc`` then says ``found: false``)."""
    d = entry.letter
    if d.payload_ref is None or d.value is not None:
        return entry
    async with pool.connection() as conn:
        value = (await fetch(conn, [d.payload_ref])).get(d.payload_ref)
    if value is None:
        log.warning("%s: kept value %s is not in eventpipe.dlq_payloads", entry.ref, d.payload_ref)
        return entry
    return decode_entry(
        entry.topic,
        entry.partition,
        entry.offset,
        entry.timestamp_ms,
        d.key,
        value,
        d.kafka_headers(),
    )
