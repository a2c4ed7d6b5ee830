"""Connections to the captured database, with the session settings value conversion
relies on (the text form of timestamps, intervals, floats and bytea depends on them)."""

from __future__ import annotations

from typing import Any

import psycopg

from eventpipe.errors import DatabaseUnavailableError

from .types import SESSION_SETTINGS


async def connect(
    url: str, *, application_name: str, connect_timeout_s: float = 10.0
) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection (use ``conn.transaction()`` for a transaction)."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            application_name=application_name[:63],
            connect_timeout=max(1, int(connect_timeout_s)),
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to the captured PostgreSQL ({exc.__class__.__name__}: "
            f"{str(exc).strip()}); check the source's database_url or database.url"
        ) from exc
    try:
        for name, value in SESSION_SETTINGS.items():
            await conn.execute("select set_config(%s, %s, false)", (name, value))
    except BaseException:
        await conn.close()
        raise
    return conn
