"""The console's audit log, ``eventpipe.console_actions`` (migration 0016): who did
what, to what, why, when, and how it ended.  A row is written before an action
runs and its outcome after, so an action cut short is on record too."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Action:
    id: int
    at: datetime
    who: str
    action: str
    target: str | None
    reason: str | None
    detail: dict[str, Any]
    outcome: str


async def finish(
    pool: AsyncConnectionPool, action_id: int, outcome: str, detail: dict[str, Any] | None = None
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "update eventpipe.console_actions set outcome = %s, detail = detail || %s "
            "where id = %s",
            (outcome, Jsonb(detail or {}), action_id),
        )


@contextlib.asynccontextmanager
async def recorded(
    pool: AsyncConnectionPool,
    who: str,
    action: str,
    target: str | None = None,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AsyncIterator[int]:
    """An action on record before it runs; an exception out of it is recorded as its
    outcome (``error: <class>``), and the caller records any other with :func:`finish`."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "insert into eventpipe.console_actions (who, action, target, reason, detail) "
            "values (%s, %s, %s, %s, %s) returning id",
            (who, action, target, reason, Jsonb(detail or {})),
        )
        row = await cur.fetchone()
    assert row is not None
    action_id = int(row[0])
    log.info("console: %s %s %s (%s)", who, action, target or "", reason or "no reason given")
    try:
        yield action_id
    except BaseException as exc:
        await finish(pool, action_id, f"error: {type(exc).__name__}")
        raise


async def record(
    pool: AsyncConnectionPool, who: str, action: str, outcome: str = "ok", **fields: Any
) -> None:
    """An action that is done as it is recorded (a login, a logout)."""
    async with recorded(pool, who, action, **fields) as action_id:
        pass
    await finish(pool, action_id, outcome)


async def recent(pool: AsyncConnectionPool, limit: int = 200) -> list[Action]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select id, at, who, action, target, reason, detail, outcome "
            "from eventpipe.console_actions order by at desc, id desc limit %s",
            (limit,),
        )
        return [Action(*row) for row in await cur.fetchall()]
