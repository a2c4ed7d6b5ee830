"""The psycopg 3 async connection pool every Postgres-backed part shares."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool, PoolTimeout

from eventpipe.errors import DatabaseUnavailableError
from eventpipe.settings import DatabaseSettings


async def open_pool(db: DatabaseSettings, *, name: str = "eventpipe") -> AsyncConnectionPool:
    """Open a pool and wait until it holds ``pool_min`` connections (at least one is
    tried), so a wrong URL fails here with a clear error rather than at first use."""
    pool = AsyncConnectionPool(
        db.url.get_secret_value(),
        min_size=max(db.pool_min, 1),
        max_size=db.pool_max,
        open=False,
        name=name,
        kwargs={"autocommit": False, "connect_timeout": max(1, int(db.connect_timeout_s))},
        timeout=db.connect_timeout_s,
    )
    try:
        await pool.open(wait=True, timeout=db.connect_timeout_s)
    except PoolTimeout as exc:
        await pool.close()
        raise DatabaseUnavailableError(
            f"could not connect to PostgreSQL within {db.connect_timeout_s:.0f}s; check "
            "database.url / EVENTPIPE_DATABASE_URL"
        ) from exc
    return pool
