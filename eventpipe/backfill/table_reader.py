"""Reading a CDC source's tables over a time range (``--source table``).

The tables are those of the ``postgres_cdc`` sources whose topics the pipeline
reads.  Each is read in primary-key order, in keyset chunks (``key > last``,
``limit n``: the CDC snapshot's :func:`select_chunk`), filtered on a timestamp
column (``--time-column``, default ``updated_at``) in ``[--from, --to)``.  Rows
become ``op: r`` change events built by the CDC source's own
:class:`EventBuilder`, so they look like what its snapshot emits (same type,
source, topic, partition key, data envelope) and go through the pipeline as if
read from its topic.

Ids are deterministic, so a re-run produces the same ids for rows that did not
change: ``backfill:<schema>.<table>:<key>@<time column value>``.  A row updated
since (a newer time column value) is a new event.  ``time`` is the row's time
column value; ``cdclsn`` and ``source.lsn`` are the WAL position at the read.
Progress is the last key read (``last_key``), so ``--resume`` continues with
the next chunk.  With ``--workers`` a table is planned as that many key ranges of
about the same size (progress rows -1, -2, ..., each up to its ``end_key``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from eventpipe.connectors.postgres_cdc.checks import table_meta
from eventpipe.connectors.postgres_cdc.config import (
    PostgresCdcConfig,
    PostgresCdcEntry,
    parse_table,
)
from eventpipe.connectors.postgres_cdc.connection import connect
from eventpipe.connectors.postgres_cdc.events import EventBuilder, key_string
from eventpipe.connectors.postgres_cdc.lsn import parse_lsn
from eventpipe.connectors.postgres_cdc.snapshot import KeyInfo, key_info, select_chunk
from eventpipe.connectors.postgres_cdc.types import TypeRegistry
from eventpipe.envelope.event import parse_time
from eventpipe.pipelines.batch import Record
from eventpipe.pipelines.spec import PipelineSpec
from eventpipe.settings import Settings

from .job import Progress
from .options import BackfillArgumentError, BackfillError
from .topic_reader import Batch

TIME_TYPES = ("timestamp with time zone", "timestamp without time zone")


@dataclass(frozen=True)
class TableTarget:
    """One table of a CDC source that feeds the pipeline."""

    source: str  # the source's name
    config: PostgresCdcConfig
    table: str  # schema.table
    topic: str
    url: str

    @property
    def stream(self) -> str:
        return f"table:{self.table}"


def resolve_tables(
    settings: Settings, spec: PipelineSpec, only: Sequence[str] = ()
) -> list[TableTarget]:
    """The CDC tables whose topics ``spec`` reads (optionally only those named)."""
    wanted = {".".join(parse_table(t)) for t in only} if only else None
    found: list[TableTarget] = []
    for cfg in settings.sources:
        if isinstance(cfg, Mapping):
            raise TypeError("sources are not parsed: load the config with eventpipe.service.config")
        if not isinstance(cfg, PostgresCdcEntry):
            continue
        name = cfg.name
        url = (cfg.database_url or settings.database.url).get_secret_value()
        for table in cfg.tables:
            schema, tname = parse_table(table)
            topic = cfg.topic_for(name, schema, tname)
            if topic in spec.source.topics and (wanted is None or table in wanted):
                found.append(TableTarget(name, cfg, table, topic, url))
    if not found:
        if wanted:
            raise BackfillArgumentError(
                "--table",
                f"none of {', '.join(sorted(wanted))} is a CDC table whose topic pipeline "
                f"{spec.name!r} reads ({', '.join(spec.source.topics)})",
            )
        raise BackfillArgumentError(
            "--source",
            f"table: no postgres_cdc source in the config writes the topics pipeline "
            f"{spec.name!r} reads ({', '.join(spec.source.topics)}); use --source topic",
        )
    if wanted:
        missing = wanted - {t.table for t in found}
        if missing:
            raise BackfillArgumentError(
                "--table", f"{', '.join(sorted(missing))}: not a CDC table feeding {spec.name!r}"
            )
    return found


class TableReader:
    """Keyset chunks of one table, as ``op: r`` change-event records."""

    def __init__(self, target: TableTarget, time_column: str, start: datetime, end: datetime):
        self.target = target
        self.time_column = time_column
        self.start = start
        self.end = end
        self.registry = TypeRegistry(target.config.numeric)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._key: KeyInfo | None = None
        self._where = ""
        self._builder: EventBuilder | None = None

    async def open(self) -> None:
        t = self.target
        conn = await connect(t.url, application_name=f"eventpipe-backfill-{t.source}")
        try:
            schema, name = parse_table(t.table)
            meta = await table_meta(conn, schema, name)
            if meta is None:
                raise BackfillError(f"table {t.table} (source {t.source!r}) does not exist")
            key = t.config.key_columns.get(t.table) or meta.primary_key
            if not key:
                raise BackfillError(
                    f"table {t.table} has no primary key; list its key under the source's "
                    "key_columns"
                )
            cur = await conn.execute(
                "select format_type(a.atttypid, a.atttypmod) from pg_attribute a "
                "where a.attrelid = %s and a.attname = %s and a.attnum > 0 "
                "and not a.attisdropped",
                (meta.oid, self.time_column),
            )
            row = await cur.fetchone()
            if row is None:
                raise BackfillArgumentError(
                    "--time-column",
                    f"table {t.table} has no column {self.time_column!r}; name the column "
                    "that holds when a row last changed",
                )
            if row[0] not in TIME_TYPES:
                raise BackfillArgumentError(
                    "--time-column", f"{t.table}.{self.time_column} is {row[0]}, not a timestamp"
                )
            self._key = await key_info(conn, t.table, key)
            col = sql.Identifier(self.time_column)
            self._where = (
                sql.SQL("{c} >= {a}::timestamptz and {c} < {b}::timestamptz")
                .format(
                    c=col,
                    a=sql.Literal(self.start.isoformat()),
                    b=sql.Literal(self.end.isoformat()),
                )
                .as_string(conn)
            )
            cur = await conn.execute("select current_database()::text")
            db = await cur.fetchone()
            cfg = t.config
            self._builder = EventBuilder(
                name=t.source,
                prefix=cfg.prefix(t.source),
                type_prefix=cfg.types_prefix(t.source),
                source_uri=cfg.source_attr(t.source),
                database=db[0] if db else "",
                topic_template=cfg.topic,
                message_topic=cfg.message_topic,
                toast_placeholder=cfg.toast_placeholder,
                mode=cfg.mode,
            )
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def count(self) -> int:
        """Rows in range (the progress bar's total)."""
        assert self._conn is not None
        schema, name = parse_table(self.target.table)
        q = sql.SQL("select count(*) from {} where ").format(sql.Identifier(schema, name))
        cur = await self._conn.execute(q + sql.SQL(self._where.replace("%", "%%")))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    def plan(self, estimate: int) -> Progress:
        return Progress(stream=self.target.stream, partition=-1, estimate=estimate)

    async def plan_ranges(self, n: int) -> list[Progress]:
        """The rows in range as up to ``n`` key ranges of about the same size (one
        scan of the key, ``ntile``), so ``n`` worker processes can share the table:
        range i reads after range i-1's last key, up to its own (the last one has
        no end)."""
        if n <= 1:
            return [self.plan(await self.count())]
        assert self._conn is not None and self._key is not None
        schema, name = parse_table(self.target.table)
        cols = [sql.Identifier(c) for c in self._key.columns]
        keys = sql.SQL(", ").join(cols)
        texts = sql.SQL(", ").join(sql.SQL("{}::text").format(c) for c in cols)
        desc = sql.SQL(", ").join(sql.SQL("{} desc").format(c) for c in cols)
        q = sql.SQL(
            "with t as materialized (select {keys}, ntile({n}) over (order by {keys}) as ep_tile "
            "from {table} where {where}), "
            "ends as (select distinct on (ep_tile) ep_tile, array[{texts}] as ep_end from t "
            "order by ep_tile, {desc}) "
            "select e.ep_tile, e.ep_end, (select count(*) from t where t.ep_tile = e.ep_tile) "
            "from ends e order by e.ep_tile"
        ).format(
            keys=keys,
            n=sql.Literal(n),
            table=sql.Identifier(schema, name),
            where=sql.SQL(self._where),  # no parameters: a % stays as it is
            texts=texts,
            desc=desc,
        )
        cur = await self._conn.execute(q)
        rows = await cur.fetchall()
        if len(rows) <= 1:
            return [self.plan(sum(int(r[2]) for r in rows))]
        out: list[Progress] = []
        after: list[str] | None = None
        for i, (_, end, count) in enumerate(rows):
            last = i == len(rows) - 1
            out.append(
                Progress(
                    stream=self.target.stream,
                    partition=-1 - i,
                    estimate=int(count),
                    last_key=after,
                    end_key=None if last else list(end),
                )
            )
            after = list(end)
        return out

    async def batches(self, p: Progress, size: int) -> AsyncIterator[Batch]:
        conn, key, builder = self._conn, self._key, self._builder
        assert conn is not None and key is not None and builder is not None
        t = self.target
        schema, name = parse_table(t.table)
        last = p.last_key
        n = p.next_offset
        while True:
            async with conn.transaction():
                await conn.execute("set transaction isolation level repeatable read, read only")
                cur = await conn.execute("select pg_current_wal_lsn()::text")
                lsn_row = await cur.fetchone()
                sel = await select_chunk(
                    conn,
                    table=t.table,
                    key=key,
                    last_key=last,
                    upto=p.end_key,
                    where=self._where,
                    size=size,
                    registry=self.registry,
                )
            at = lsn_row[0] if lsn_row else "0/0"
            info = builder.snapshot_table_info(
                schema, name, sel.names, sel.type_oids, key.columns, self.registry
            )
            now_ms = int(time.time() * 1000)
            records: list[Record] = []
            for row in sel.rows.values():
                raw = row.get(self.time_column)
                when = parse_time(raw) if isinstance(raw, str) else None
                if when is None:
                    continue
                when_ms = int(when.timestamp() * 1000)
                event_id = f"backfill:{t.table}:{key_string(info.key_of(row), info.key)}@{raw}"
                for topic, msg, _ in builder.change(
                    info,
                    "r",
                    None,
                    row,
                    None,
                    event_id=event_id,
                    time=when,
                    commit_ms=when_ms,
                    commit_lsn=at,
                    xid=None,
                    lsn=parse_lsn(at),
                    now_ms=now_ms,
                    snapshot="incremental",
                ):
                    records.append(
                        Record(
                            index=len(records),
                            topic=topic,
                            partition=-1,
                            offset=n,
                            timestamp_ms=when_ms,
                            key=msg.key,
                            value=msg.value,
                            headers=list(msg.headers),
                        )
                    )
                    n += 1
            for raw_cols, _exc in sel.errors:
                # A row the converters cannot take: passed on undecodable, so the pipeline
                # dead-letters it (stage decode) with its columns, rather than dropping it.
                value = orjson.dumps({"schema": schema, "table": name, "columns": raw_cols})
                records.append(Record(len(records), t.topic, -1, n, None, None, value, []))
                n += 1
            last = sel.last_key
            done = sel.count < size
            yield Batch(records, n, done=done, last_key=last)
            if done:
                return
