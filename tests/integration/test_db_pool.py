from __future__ import annotations

import pytest

from eventpipe.db.pool import open_pool
from eventpipe.embedded.process import free_port
from eventpipe.errors import DatabaseUnavailableError, is_retriable
from eventpipe.settings import DatabaseSettings, Settings


async def test_pool_serves_connections(settings: Settings) -> None:
    pool = await open_pool(settings.database)
    try:
        async with pool.connection() as conn:
            cur = await conn.execute("show wal_level")
            assert await cur.fetchone() == ("logical",)
    finally:
        await pool.close()


async def test_unreachable_database_is_a_clear_retriable_error() -> None:
    db = DatabaseSettings(
        url=f"postgresql://postgres@127.0.0.1:{free_port()}/x",  # type: ignore[arg-type]
        connect_timeout_s=1,
    )
    with pytest.raises(DatabaseUnavailableError, match="EVENTPIPE_DATABASE_URL") as ei:
        await open_pool(db)
    assert is_retriable(ei.value)
