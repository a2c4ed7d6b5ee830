"""The CDC source's own rows in eventpipe's database (migration 0005): snapshot
requests and their progress, signals from the CLI, and the status `cdc status` shows."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool


@dataclass(slots=True)
class SnapshotTask:
    id: int
    table: str
    where: str | None
    kind: str  # initial | incremental
    status: str
    last_key: list[str] | None
    max_key: list[str] | None
    rows_read: int


_TASK_COLS = "id, table_name, where_clause, kind, status, last_key, max_key, rows_read"


def _task(row: tuple[Any, ...]) -> SnapshotTask:
    return SnapshotTask(*row)


class StateStore:
    def __init__(self, pool: AsyncConnectionPool, slot: str) -> None:
        self.pool = pool
        self.slot = slot

    # ------------------------------------------------------------ snapshots
    async def reset_for_new_slot(self, tables: list[str], initial: bool) -> None:
        """Before a slot is created: forget what an older slot of this name did, and
        queue the initial snapshot (so a crash after creating the slot still runs it)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("delete from eventpipe.cdc_snapshots where slot = %s", (self.slot,))
            if initial:
                for t in tables:
                    await conn.execute(
                        "insert into eventpipe.cdc_snapshots (slot, table_name, kind)"
                        " values (%s, %s, 'initial')",
                        (self.slot, t),
                    )

    async def next_task(self) -> SnapshotTask | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"select {_TASK_COLS} from eventpipe.cdc_snapshots"
                " where slot = %s and status in ('pending', 'running') order by id limit 1",
                (self.slot,),
            )
            row = await cur.fetchone()
        return _task(row) if row else None

    async def tasks(self) -> list[SnapshotTask]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"select {_TASK_COLS} from eventpipe.cdc_snapshots where slot = %s order by id",
                (self.slot,),
            )
            return [_task(r) for r in await cur.fetchall()]

    async def start_task(self, task_id: int, max_key: list[str] | None) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "update eventpipe.cdc_snapshots set status = 'running', max_key = %s,"
                " updated_at = now() where id = %s",
                (Jsonb(max_key), task_id),
            )

    async def save_progress(
        self, task_id: int, last_key: list[str] | None, rows: int, done: bool
    ) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "update eventpipe.cdc_snapshots set last_key = coalesce(%s, last_key),"
                " rows_read = rows_read + %s, updated_at = now(),"
                " status = case when %s then 'done' else status end,"
                " finished_at = case when %s then now() else finished_at end"
                " where id = %s",
                (Jsonb(last_key) if last_key is not None else None, rows, done, done, task_id),
            )

    async def fail_task(self, task_id: int, error: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "update eventpipe.cdc_snapshots set status = 'failed', error = %s,"
                " updated_at = now(), finished_at = now() where id = %s",
                (error, task_id),
            )

    async def initial_done(self) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "select count(*) filter (where status <> 'done'), count(*)"
                " from eventpipe.cdc_snapshots where slot = %s and kind = 'initial'",
                (self.slot,),
            )
            row = await cur.fetchone()
        return bool(row and row[1] > 0 and row[0] == 0)

    # -------------------------------------------------------------- signals
    async def take_signals(self, captured: AbstractSet[str]) -> list[str]:
        """Turn pending snapshot signals into snapshot tasks; returns the tables queued."""
        queued: list[str] = []
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "select id, type, data from eventpipe.cdc_signals"
                " where slot = %s and processed_at is null order by id for update skip locked",
                (self.slot,),
            )
            for sig_id, _kind, data in await cur.fetchall():
                tables = list(data.get("tables") or [])
                where = data.get("where")
                unknown = [t for t in tables if t not in captured]
                if unknown or not tables:
                    result = (
                        f"rejected: {', '.join(unknown)} not captured by this source"
                        if unknown
                        else "rejected: no table named"
                    )
                else:
                    for t in tables:
                        await conn.execute(
                            "insert into eventpipe.cdc_snapshots (slot, table_name,"
                            " where_clause, kind) values (%s, %s, %s, 'incremental')",
                            (self.slot, t, where),
                        )
                    queued.extend(tables)
                    result = "queued"
                await conn.execute(
                    "update eventpipe.cdc_signals set processed_at = now(), result = %s"
                    " where id = %s",
                    (result, sig_id),
                )
        return queued

    # --------------------------------------------------------------- status
    async def write_status(
        self,
        source: str,
        position: str | None,
        last_event_id: str | None,
        last_commit_at: datetime | None,
        events: int,
        reader: str,
    ) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "insert into eventpipe.cdc_status as s (slot, source, position, last_event_id,"
                " last_commit_at, events_total, reader, updated_at)"
                " values (%s, %s, %s, %s, %s, %s, %s, now())"
                " on conflict (slot) do update set source = excluded.source,"
                " position = excluded.position,"
                " last_event_id = coalesce(excluded.last_event_id, s.last_event_id),"
                " last_commit_at = coalesce(excluded.last_commit_at, s.last_commit_at),"
                " events_total = s.events_total + excluded.events_total,"
                " reader = excluded.reader, updated_at = now()",
                (self.slot, source, position, last_event_id, last_commit_at, events, reader),
            )


async def forget_slot(conn: Any, slot: str) -> None:
    """After a slot is dropped: its snapshot progress and status mean nothing any more."""
    for table in ("cdc_snapshots", "cdc_status", "cdc_signals"):
        await conn.execute(f"delete from eventpipe.{table} where slot = %s", (slot,))


async def request_snapshot(
    conn: Any, slot: str, tables: list[str], where: str | None = None
) -> int:
    """Queue an incremental snapshot for the source reading ``slot`` (the CLI uses it)."""
    cur = await conn.execute(
        "insert into eventpipe.cdc_signals (slot, type, data) values (%s, 'snapshot', %s)"
        " returning id",
        (slot, Jsonb({"tables": tables, "where": where})),
    )
    row = await cur.fetchone()
    return int(row[0])
