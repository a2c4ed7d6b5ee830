"""Write your own sink: ``audit_rows`` appends one row per event to a PostgreSQL
table, through the service's pool (docs/architecture.md, "Write your own sink").

```yaml
pipelines:
  - name: audit
    source: {topics: [shop.events]}
    sinks:
      - audit_rows: {table: public.audit}
```

with ``create table public.audit (event_id text primary key, type text not null,
source text not null, data jsonb)``.

What the sink contract asks (``eventpipe.sink``), and how this one answers:

* ``deliver(items)`` writes the events of a batch and returns the records that
  failed, by index; it raises :class:`SinkUnavailableError` when the database as a
  whole cannot take the write (the pipeline holds the batch and backs off, its
  circuit opens after repeated failures).
* A record PostgreSQL refuses (a constraint, a value of the wrong type) is that
  record's permanent error: it is dead-lettered, the others are written.
* Delivery is at least once; the event id is the primary key, so a record written
  again (after a crash, before its offset was committed) changes nothing.
* ``preflight`` finds a missing table before anything starts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout
from pydantic import field_validator

from eventpipe.errors import PermanentError
from eventpipe.plugin import PluginConfig
from eventpipe.preflight import Reach
from eventpipe.sink import (
    BeforeCommit,
    DeliveryItem,
    PipelineSink,
    SinkPlugin,
    SinkUnavailableError,
)

_TABLE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$")
INSERT = (
    "insert into {} (event_id, type, source, data) values (%s, %s, %s, %s) on conflict do nothing"
)


class AuditRowsConfig(PluginConfig):
    """``audit_rows:`` in a pipeline's ``sinks:`` list."""

    table: str

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        if not _TABLE.match(v):
            raise ValueError("use table or schema.table (letters, digits, _)")
        return v


class RowRefusedError(PermanentError):
    """PostgreSQL refused this event's row (the cause says why)."""


class AuditRowsSink(PipelineSink):
    type_name = "audit_rows"
    Config = AuditRowsConfig

    def __init__(self, config: AuditRowsConfig, *, name: str | None = None) -> None:
        super().__init__(config, name=name)
        self.table = sql.Identifier(*config.table.split("."))

    @classmethod
    async def preflight(cls, config: Any, reach: Reach) -> list[tuple[str, str]]:
        if reach.pool is None:
            return []  # the database is not being checked
        async with reach.pool.connection() as conn:
            cur = await conn.execute("select to_regclass(%s)", (config.table,))
            row = await cur.fetchone()
        return [] if row and row[0] else [("table", f"table {config.table} does not exist")]

    async def deliver(
        self, items: Sequence[DeliveryItem], *, before_commit: BeforeCommit | None = None
    ) -> dict[int, BaseException]:
        pool = self.need_context().pool
        if pool is None:
            raise SinkUnavailableError(f"sink {self.label}: the service has no database")
        rows = [(it.index, _row(ev)) for it in items for ev in it.events]
        query = sql.SQL(INSERT).format(self.table)
        failed: dict[int, BaseException] = {}
        try:
            async with pool.connection() as conn:
                try:
                    async with conn.transaction(), conn.cursor() as cur:
                        await cur.executemany(query, [r for _, r in rows])
                except (psycopg.DataError, psycopg.IntegrityError):
                    # a bad row refused the batch: write them one by one to find it
                    for index, row in rows:
                        if index in failed:
                            continue
                        try:
                            async with conn.transaction():
                                await conn.execute(query, row)
                        except (psycopg.DataError, psycopg.IntegrityError) as exc:
                            failed[index] = RowRefusedError(f"sink {self.label}: {exc}")
                            failed[index].__cause__ = exc
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise SinkUnavailableError(f"sink {self.label}: {exc}") from exc
        return failed


def _row(event: Any) -> tuple[Any, ...]:
    data = event.data if not isinstance(event.data, bytes | bytearray) else None
    return (event.id, event.type, event.source, Jsonb(data))


PLUGIN = SinkPlugin(
    "sink",
    "audit_rows",
    AuditRowsConfig,
    AuditRowsSink.build,
    "one row per event (id, type, source, data) in a PostgreSQL table, via the service's pool",
    check=AuditRowsSink.preflight,
)
