"""Ordered SQL migrations: applied once, recorded in a table, safe to run twice and
from two processes at once (a transaction-level advisory lock serialises them).

Files live in ``eventpipe/db/migrations/NNNN_name.sql``; the number orders them.
A changed file that was already applied is an error (its checksum is recorded).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from eventpipe.errors import PermanentError

LOCK_KEY = 0x6576_7470_6970_65  # "evtpipe"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(PermanentError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover() -> list[Migration]:
    folder = resources.files("eventpipe.db").joinpath("migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        m = _NAME.match(entry.name)
        if not m:
            continue
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migrations share number {version:04d}")
        found[version] = Migration(version, m.group(2), entry.read_text())
    return [found[v] for v in sorted(found)]


_BOOTSTRAP = """
create schema if not exists eventpipe;
create table if not exists eventpipe.schema_migrations (
    version integer primary key,
    name text not null,
    checksum text not null,
    applied_at timestamptz not null default now()
)
"""


async def apply_migrations(url: str, migrations: list[Migration] | None = None) -> list[int]:
    """Apply what is missing; returns the versions applied by this call."""
    migrations = discover() if migrations is None else migrations
    applied_now: list[int] = []
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        await conn.execute(_BOOTSTRAP)
        cur = await conn.execute("select version, checksum from eventpipe.schema_migrations")
        done = {int(v): c for v, c in await cur.fetchall()}
        for m in migrations:
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            await conn.execute(m.sql.encode())
            await conn.execute(
                "insert into eventpipe.schema_migrations (version, name, checksum) "
                "values (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
            applied_now.append(m.version)
    return applied_now
