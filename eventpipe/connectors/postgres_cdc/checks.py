"""Start-up checks and setup: every problem is reported at once, each with what to run.

:func:`inspect` only reads (a standby runs it too); :func:`ensure_setup` creates
the publication and slot when the config allows, and runs only while holding
the slot's lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from eventpipe.errors import PermanentError

from . import slot as slots
from .config import parse_table
from .slot import PLUGIN, SlotInfo


class CdcSetupError(PermanentError):
    """The database is not ready for CDC; ``problems`` say what to run."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"postgres_cdc source {source!r} cannot start:\n{lines}")


@dataclass(slots=True)
class TableMeta:
    schema: str
    table: str
    oid: int
    replident: str
    primary_key: list[str]
    columns: list[str]
    key: list[str] = field(default_factory=list)  # primary key or configured key columns

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(slots=True)
class Inspection:
    tables: dict[str, TableMeta]
    slot: SlotInfo | None
    publication_tables: set[str] | None
    database: str
    problems: list[str]


_TABLE = """
select c.oid::int, c.relreplident::text, c.relkind::text,
       array(select a.attname::text from pg_index i
             join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
             where i.indrelid = c.oid and i.indisprimary
             order by array_position(i.indkey::int2[], a.attnum)),
       array(select a.attname::text from pg_attribute a
             where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
             order by a.attnum)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = %s and c.relname = %s
"""
_IDENTITY = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "USING INDEX"}


async def table_meta(
    conn: psycopg.AsyncConnection[Any], schema: str, table: str
) -> TableMeta | None:
    cur = await conn.execute(_TABLE, (schema, table))
    row = await cur.fetchone()
    if row is None or row[2] not in ("r", "p"):
        return None
    return TableMeta(schema, table, row[0], row[1], list(row[3]), list(row[4]))


async def _setting(conn: psycopg.AsyncConnection[Any], name: str) -> str:
    cur = await conn.execute("select current_setting(%s)", (name,))
    row = await cur.fetchone()
    return str(row[0]) if row else ""


async def inspect(
    conn: psycopg.AsyncConnection[Any],
    *,
    source: str,
    tables: list[str],
    slot: str,
    publication: str,
    key_columns: dict[str, list[str]],
    create_slot: bool,
    create_publication: bool,
    require_full: bool = False,
    streaming: bool = True,
) -> Inspection:
    """With ``streaming=False`` (``snapshot: initial_only``) only the tables are checked."""
    problems: list[str] = []
    wal_level = await _setting(conn, "wal_level")
    if streaming and wal_level != "logical":
        problems.append(
            f"wal_level is {wal_level!r}; logical decoding needs 'logical': run "
            "`ALTER SYSTEM SET wal_level = logical;` and restart PostgreSQL"
        )
    cur = await conn.execute(
        "select current_user::text, rolsuper or rolreplication, current_database()::text"
        " from pg_roles where rolname = current_user"
    )
    row = await cur.fetchone()
    assert row is not None
    user, may_replicate, database = row
    if streaming and not may_replicate:
        problems.append(
            f"role {user!r} may not use replication slots: run "
            f"`ALTER ROLE {user} WITH REPLICATION;`"
        )
    metas: dict[str, TableMeta] = {}
    for name in tables:
        schema, table = parse_table(name)
        meta = await table_meta(conn, schema, table)
        if meta is None:
            problems.append(f"table {name} does not exist: create it, or remove it from `tables`")
            continue
        metas[name] = meta
        configured = key_columns.get(name)
        if meta.replident == "n":
            problems.append(
                f"table {name} has REPLICA IDENTITY NOTHING, so its updates and deletes "
                f"cannot be captured: run `ALTER TABLE {name} REPLICA IDENTITY DEFAULT;` "
                "(or FULL)"
            )
        if require_full and meta.replident != "f":
            problems.append(
                f"table {name} has REPLICA IDENTITY {_IDENTITY[meta.replident]}, and "
                f"require_replica_identity_full is set: run "
                f"`ALTER TABLE {name} REPLICA IDENTITY FULL;`"
            )
        if configured:
            missing = [c for c in configured if c not in meta.columns]
            if missing:
                problems.append(f"key_columns.{name} names columns it does not have: {missing}")
            meta.key = list(configured)
        elif meta.primary_key:
            meta.key = list(meta.primary_key)
        else:
            problems.append(
                f"table {name} has no primary key, so its changes have no key: add one "
                f"(`ALTER TABLE {name} ADD PRIMARY KEY (...);`), or run "
                f"`ALTER TABLE {name} REPLICA IDENTITY FULL;` and list its key columns "
                f"under key_columns.{name}"
            )
        if not meta.primary_key and meta.replident == "d":
            problems.append(
                f"table {name} has no primary key and REPLICA IDENTITY DEFAULT, so "
                f"PostgreSQL rejects its updates and deletes once it is published: run "
                f"`ALTER TABLE {name} REPLICA IDENTITY FULL;` (or add a primary key)"
            )

    if not streaming:
        return Inspection(metas, None, None, database, problems)
    pub_tables = await slots.publication_tables(conn, publication)
    listing = ", ".join(tables)
    if pub_tables is None:
        if not create_publication:
            problems.append(
                f"publication {publication} does not exist: run "
                f"`CREATE PUBLICATION {publication} FOR TABLE {listing};` or set "
                "create_publication: true"
            )
    else:
        absent = [t for t in tables if t not in pub_tables]
        if absent and not create_publication:
            problems.append(
                f"publication {publication} does not include {', '.join(absent)}: run "
                f"`ALTER PUBLICATION {publication} ADD TABLE {', '.join(absent)};`"
            )

    info = await slots.slot_info(conn, slot)
    if info is None:
        if not create_slot:
            problems.append(
                f"replication slot {slot} does not exist: run "
                f"`SELECT pg_create_logical_replication_slot('{slot}', '{PLUGIN}');` or set "
                "create_slot: true"
            )
        else:
            cur = await conn.execute(
                "select count(*), current_setting('max_replication_slots')::int"
                " from pg_replication_slots"
            )
            used_max = await cur.fetchone()
            assert used_max is not None
            if used_max[0] >= used_max[1]:
                problems.append(
                    f"all {used_max[1]} replication slots are in use: raise "
                    "max_replication_slots, or drop slots nobody reads "
                    "(`eventpipe cdc status` lists them; `eventpipe cdc drop-slot NAME`)"
                )
    else:
        if info.slot_type != "logical" or info.plugin != PLUGIN:
            problems.append(
                f"slot {slot} is a {info.slot_type} slot with plugin {info.plugin!r}, not a "
                f"logical {PLUGIN} slot: choose another slot name, or drop it with "
                f"`eventpipe cdc drop-slot {slot}`"
            )
        elif info.database != database:
            problems.append(
                f"slot {slot} belongs to database {info.database!r}, not {database!r}: "
                "choose another slot name"
            )
        elif info.wal_status == "lost":
            problems.append(
                f"slot {slot} lost WAL it still needed (max_slot_wal_keep_size), so changes "
                f"were missed: drop it with `eventpipe cdc drop-slot {slot}` and start again "
                "(snapshot: initial reads the tables afresh)"
            )
    return Inspection(metas, info, pub_tables, database, problems)


async def ensure_setup(
    conn: psycopg.AsyncConnection[Any],
    found: Inspection,
    *,
    slot: str,
    publication: str,
    tables: list[str],
    publish: str | None = None,
) -> bool:
    """Create what is missing (the config allowed it, or :func:`inspect` would have
    complained).  Returns True when the slot was created now."""
    ids = [parse_table(t) for t in tables]
    if found.publication_tables is None:
        q = sql.SQL("create publication {} for table {}").format(
            sql.Identifier(publication), slots.table_list(ids)
        )
        if publish:
            q = q + sql.SQL(" with (publish = {})").format(sql.Literal(publish))
        await conn.execute(q)
    else:
        absent = [parse_table(t) for t in tables if t not in found.publication_tables]
        if absent:
            await conn.execute(
                sql.SQL("alter publication {} add table {}").format(
                    sql.Identifier(publication), slots.table_list(absent)
                )
            )
    if found.slot is None:
        await slots.create_slot(conn, slot)
        return True
    return False
