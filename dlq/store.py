"""Postgres records of replays and discards (migration 0007_dlq.sql)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection

Ref = tuple[str, int, int]


@dataclass(slots=True)
class ReplayRow:
    ref: Ref
    event_id: str | None
    target_topic: str
    target_partition: int | None
    target_offset: int | None
    patch: str | None
    forced: bool


async def replayed(conn: AsyncConnection, topics: Iterable[str]) -> set[Ref]:
    cur = await conn.execute(
        'select dlq_topic, partition, "offset" from eventpipe.dlq_replays '
        "where dlq_topic = any(%s)",
        (list(topics),),
    )
    return {(t, p, o) for t, p, o in await cur.fetchall()}


async def discarded(conn: AsyncConnection, topics: Iterable[str]) -> set[Ref]:
    cur = await conn.execute(
        'select dlq_topic, partition, "offset" from eventpipe.dlq_discards '
        "where dlq_topic = any(%s)",
        (list(topics),),
    )
    return {(t, p, o) for t, p, o in await cur.fetchall()}


async def record_replays(conn: AsyncConnection, rows: Sequence[ReplayRow]) -> None:
    """One COPY (a replay records thousands of rows a second)."""
    async with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(
            'copy eventpipe.dlq_replays (dlq_topic, partition, "offset", event_id, '
            "target_topic, target_partition, target_offset, patch, forced) from stdin"
        ) as copy,
    ):
        for r in rows:
            await copy.write_row(
                (
                    *r.ref,
                    r.event_id,
                    r.target_topic,
                    r.target_partition,
                    r.target_offset,
                    r.patch,
                    r.forced,
                )
            )


async def record_discards(
    conn: AsyncConnection, refs: Sequence[tuple[Ref, str | None]], reason: str
) -> int:
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(
            'insert into eventpipe.dlq_discards (dlq_topic, partition, "offset", event_id, '
            "reason) values (%s, %s, %s, %s, %s) on conflict do nothing",
            [(*ref, event_id, reason) for ref, event_id in refs],
        )
        return cur.rowcount
