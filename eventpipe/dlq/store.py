"""Postgres records of replays and discards (migrations 0007_dlq.sql, 0016_console.sql:
who did it and why)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection, sql

from eventpipe.kafka.incarnation import RETIRED

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
    topic_id: uuid.UUID | None = None  # the DLQ topic's id now
    who: str | None = None  # the operator (the CLI's --by, the console's login name)
    reason: str | None = None


@dataclass(slots=True)
class HistoryRow:
    """One thing done to a dead letter: a replay or a discard."""

    action: str  # "replay" | "discard"
    at: datetime
    who: str | None
    reason: str | None
    target: str | None = None  # replay: topic:partition:offset it was written to
    patch: str | None = None
    forced: bool = False


async def replayed(conn: AsyncConnection, topics: Iterable[str]) -> dict[Ref, uuid.UUID | None]:
    """Every replayed record of ``topics`` -> the DLQ topic's id when it was replayed."""
    return await _refs(conn, "dlq_replays", topics)


async def discarded(conn: AsyncConnection, topics: Iterable[str]) -> dict[Ref, uuid.UUID | None]:
    """Every discarded record of ``topics`` -> the DLQ topic's id when it was discarded."""
    return await _refs(conn, "dlq_discards", topics)


async def _refs(
    conn: AsyncConnection, table: str, topics: Iterable[str]
) -> dict[Ref, uuid.UUID | None]:
    cur = await conn.execute(
        sql.SQL(
            'select dlq_topic, partition, "offset", topic_id from eventpipe.{} '
            "where dlq_topic = any(%s)"
        ).format(sql.Identifier(table)),
        (list(topics),),
    )
    return {(t, p, o): i for t, p, o, i in await cur.fetchall()}


async def retire(conn: AsyncConnection, marks: Sequence[tuple[str, int, uuid.UUID | None]]) -> None:
    """Rows of earlier incarnations of DLQ topics, (topic, partition, their topic id),
    in both ledgers: given the nil id, so they are kept but match no topic."""
    topics, parts, ids = [t for t, _, _ in marks], [p for _, p, _ in marks], [i for *_, i in marks]
    async with conn.transaction():
        for table in ("dlq_replays", "dlq_discards"):
            await conn.execute(
                sql.SQL(
                    "update eventpipe.{} l set topic_id = %s "
                    "from unnest(%s::text[], %s::int[], %s::uuid[]) as u(t, p, i) "
                    "where l.dlq_topic = u.t and l.partition = u.p "
                    "and l.topic_id is not distinct from u.i"
                ).format(sql.Identifier(table)),
                (RETIRED, topics, parts, ids),
            )


async def record_replays(conn: AsyncConnection, rows: Sequence[ReplayRow]) -> None:
    """One COPY (a replay records thousands of rows a second)."""
    async with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(
            'copy eventpipe.dlq_replays (dlq_topic, partition, "offset", event_id, '
            "target_topic, target_partition, target_offset, patch, forced, topic_id, who, "
            "reason) from stdin"
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
                    r.topic_id,
                    r.who,
                    r.reason,
                )
            )


async def record_discards(
    conn: AsyncConnection,
    refs: Sequence[tuple[Ref, str | None]],
    reason: str,
    topic_ids: Mapping[str, uuid.UUID | None] | None = None,
    who: str | None = None,
) -> int:
    """A discard of a record the ledger holds for an earlier incarnation of its
    topic replaces that row (the ledger is keyed by the reference alone)."""
    ids = topic_ids or {}
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(
            'insert into eventpipe.dlq_discards as d (dlq_topic, partition, "offset", '
            "event_id, reason, topic_id, who) values (%s, %s, %s, %s, %s, %s, %s) "
            'on conflict (dlq_topic, partition, "offset") do update set '
            "event_id = excluded.event_id, reason = excluded.reason, "
            "topic_id = excluded.topic_id, who = excluded.who, discarded_at = now() "
            "where d.topic_id is distinct from excluded.topic_id",
            [(*ref, event_id, reason, ids.get(ref[0]), who) for ref, event_id in refs],
        )
        return cur.rowcount


async def history(conn: AsyncConnection, ref: Ref) -> list[HistoryRow]:
    """Every replay and discard of one dead letter, oldest first.  Rows of an earlier
    incarnation of its topic (retired by :meth:`Dlq.ledgers`) belong to another
    record and are left out: call this after the ledgers were checked."""
    cur = await conn.execute(
        "select 'replay', replayed_at, who, reason, "
        "target_topic || ':' || coalesce(target_partition::text, '?') || ':' || "
        "coalesce(target_offset::text, '?'), patch, forced "
        "from eventpipe.dlq_replays "
        'where dlq_topic = %(t)s and partition = %(p)s and "offset" = %(o)s '
        "and topic_id is distinct from %(retired)s "
        "union all "
        "select 'discard', discarded_at, who, reason, null, null, false "
        "from eventpipe.dlq_discards "
        'where dlq_topic = %(t)s and partition = %(p)s and "offset" = %(o)s '
        "and topic_id is distinct from %(retired)s "
        "order by 2",
        {"t": ref[0], "p": ref[1], "o": ref[2], "retired": RETIRED},
    )
    return [HistoryRow(*row) for row in await cur.fetchall()]
