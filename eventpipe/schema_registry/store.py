"""Postgres storage of the registry (tables from migration 0002_schema_registry).

Plain queries on a connection the caller holds, so the caller decides the
transaction.  Registrations in one subject are serialised by
:func:`lock_subject` (a transaction-level advisory lock); the same schema
registered concurrently under different subjects meets the unique fingerprint
and gets one id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from .models import SchemaReference
from .schemas import ParsedSchema

# First key of the two-int advisory locks on subjects ("SR").
SUBJECT_LOCK_CLASS = 0x5352
GLOBAL = ""

Conn = AsyncConnection[Any]


@dataclass(frozen=True, slots=True)
class StoredSchema:
    id: int
    schema_type: str
    text: str
    references: tuple[SchemaReference, ...]
    fingerprint: str


@dataclass(frozen=True, slots=True)
class StoredVersion:
    subject: str
    version: int
    schema_id: int
    deleted: bool


def _stored(row: tuple[Any, ...]) -> StoredSchema:
    sid, kind, text, refs, fp = row
    return StoredSchema(
        int(sid), kind, text, tuple(SchemaReference.from_dict(r) for r in refs or ()), fp
    )


async def lock_subject(conn: Conn, subject: str) -> None:
    await conn.execute(
        "select pg_advisory_xact_lock(%s, hashtext(%s))", (SUBJECT_LOCK_CLASS, subject)
    )


_SCHEMA_COLS = "s.id, s.schema_type, s.schema_text, s.refs, s.fingerprint"


async def get_schema(conn: Conn, schema_id: int, *, registered: bool = True) -> StoredSchema | None:
    """The schema with ``schema_id``; with ``registered``, only while some subject
    version (soft-deleted ones too) still uses it."""
    if registered:
        sql = (
            f"select {_SCHEMA_COLS} from eventpipe.sr_schemas s where s.id = %s and exists "
            "(select 1 from eventpipe.sr_subject_versions v where v.schema_id = s.id)"
        )
    else:
        sql = f"select {_SCHEMA_COLS} from eventpipe.sr_schemas s where s.id = %s"
    cur = await conn.execute(sql, (schema_id,))
    row = await cur.fetchone()
    return _stored(row) if row else None


async def find_schema(conn: Conn, fingerprint: str) -> StoredSchema | None:
    cur = await conn.execute(
        f"select {_SCHEMA_COLS} from eventpipe.sr_schemas s where s.fingerprint = %s",
        (fingerprint,),
    )
    row = await cur.fetchone()
    return _stored(row) if row else None


def _refs_json(parsed: ParsedSchema) -> Jsonb:
    return Jsonb([r.to_dict() for r in parsed.reference_list])


async def ensure_schema(conn: Conn, parsed: ParsedSchema) -> int:
    """The id of ``parsed``: the existing one, or a new one from the sequence."""
    found = await find_schema(conn, parsed.fingerprint)
    if found is not None:
        return found.id
    cur = await conn.execute(
        "insert into eventpipe.sr_schemas (schema_type, schema_text, refs, fingerprint) "
        "values (%s, %s, %s, %s) on conflict (fingerprint) do nothing returning id",
        (parsed.schema_type, parsed.text, _refs_json(parsed), parsed.fingerprint),
    )
    row = await cur.fetchone()
    if row is not None:
        return int(row[0])
    # a concurrent transaction inserted it first (we waited for it on the unique index)
    found = await find_schema(conn, parsed.fingerprint)
    assert found is not None
    return found.id


async def insert_schema_with_id(conn: Conn, parsed: ParsedSchema, schema_id: int) -> None:
    """IMPORT mode: keep the id the schema has elsewhere; the sequence moves past it."""
    await conn.execute(
        "insert into eventpipe.sr_schemas (id, schema_type, schema_text, refs, fingerprint) "
        "values (%s, %s, %s, %s, %s)",
        (schema_id, parsed.schema_type, parsed.text, _refs_json(parsed), parsed.fingerprint),
    )
    await conn.execute(
        "select setval('eventpipe.sr_schema_id_seq', greatest(%s, "
        "(select last_value from eventpipe.sr_schema_id_seq)))",
        (schema_id,),
    )


async def versions(conn: Conn, subject: str, *, include_deleted: bool) -> list[StoredVersion]:
    """The subject's versions, oldest first."""
    cur = await conn.execute(
        "select subject, version, schema_id, deleted from eventpipe.sr_subject_versions "
        "where subject = %s and (%s or not deleted) order by version",
        (subject, include_deleted),
    )
    return [StoredVersion(*row) for row in await cur.fetchall()]


async def find_in_subject(
    conn: Conn, subject: str, fingerprint: str, *, include_deleted: bool
) -> StoredVersion | None:
    """The newest version of ``subject`` holding the schema with ``fingerprint``."""
    cur = await conn.execute(
        "select v.subject, v.version, v.schema_id, v.deleted "
        "from eventpipe.sr_subject_versions v join eventpipe.sr_schemas s on s.id = v.schema_id "
        "where v.subject = %s and s.fingerprint = %s and (%s or not v.deleted) "
        "order by v.version desc limit 1",
        (subject, fingerprint, include_deleted),
    )
    row = await cur.fetchone()
    return StoredVersion(*row) if row else None


async def next_version(conn: Conn, subject: str) -> int:
    cur = await conn.execute(
        "select coalesce(max(version), 0) + 1 from eventpipe.sr_subject_versions "
        "where subject = %s",
        (subject,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def insert_version(conn: Conn, subject: str, version: int, schema_id: int) -> None:
    await conn.execute(
        "insert into eventpipe.sr_subject_versions (subject, version, schema_id) "
        "values (%s, %s, %s)",
        (subject, version, schema_id),
    )


async def subjects(
    conn: Conn, *, include_deleted: bool, deleted_only: bool, prefix: str
) -> list[str]:
    if deleted_only:
        having = "bool_and(deleted)"
    elif include_deleted:
        having = "true"
    else:
        having = "not bool_and(deleted)"
    cur = await conn.execute(
        "select subject from eventpipe.sr_subject_versions where subject like %s "
        f"group by subject having {having} order by subject",
        (_like_prefix(prefix),),
    )
    return [row[0] for row in await cur.fetchall()]


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def any_subject(conn: Conn, subject: str | None = None) -> bool:
    if subject is None:
        cur = await conn.execute(
            "select exists (select 1 from eventpipe.sr_subject_versions where not deleted)"
        )
    else:
        cur = await conn.execute(
            "select exists (select 1 from eventpipe.sr_subject_versions "
            "where subject = %s and not deleted)",
            (subject,),
        )
    row = await cur.fetchone()
    return bool(row and row[0])


async def versions_of_schema(
    conn: Conn, schema_id: int, *, include_deleted: bool, subject: str | None = None
) -> list[tuple[str, int]]:
    cur = await conn.execute(
        "select subject, version from eventpipe.sr_subject_versions "
        "where schema_id = %s and (%s or not deleted) and (%s::text is null or subject = %s) "
        "order by subject, version",
        (schema_id, include_deleted, subject, subject),
    )
    return [(row[0], int(row[1])) for row in await cur.fetchall()]


async def referenced_by(
    conn: Conn, subject: str, version: int, *, include_deleted: bool
) -> list[int]:
    """Ids of registered schemas referencing ``subject`` ``version``."""
    cur = await conn.execute(
        "select distinct s.id from eventpipe.sr_schemas s "
        "join eventpipe.sr_subject_versions v on v.schema_id = s.id "
        "where s.refs @> %s and (%s or not v.deleted) order by s.id",
        (Jsonb([{"subject": subject, "version": version}]), include_deleted),
    )
    return [int(row[0]) for row in await cur.fetchall()]


async def mark_deleted(conn: Conn, subject: str, version_list: list[int]) -> None:
    await conn.execute(
        "update eventpipe.sr_subject_versions set deleted = true "
        "where subject = %s and version = any(%s)",
        (subject, version_list),
    )


async def delete_versions(conn: Conn, subject: str, version_list: list[int]) -> None:
    await conn.execute(
        "delete from eventpipe.sr_subject_versions where subject = %s and version = any(%s)",
        (subject, version_list),
    )


async def get_config(conn: Conn, subject: str) -> tuple[str | None, str | None]:
    """(compatibility, mode) set at this level (``GLOBAL`` or a subject)."""
    cur = await conn.execute(
        "select compatibility, mode from eventpipe.sr_config where subject = %s", (subject,)
    )
    row = await cur.fetchone()
    return (row[0], row[1]) if row else (None, None)


async def set_compatibility(conn: Conn, subject: str, level: str | None) -> None:
    await conn.execute(
        "insert into eventpipe.sr_config (subject, compatibility) values (%s, %s) "
        "on conflict (subject) do update set compatibility = excluded.compatibility, "
        "updated_at = now()",
        (subject, level),
    )


async def set_mode(conn: Conn, subject: str, mode: str | None) -> None:
    await conn.execute(
        "insert into eventpipe.sr_config (subject, mode) values (%s, %s) "
        "on conflict (subject) do update set mode = excluded.mode, updated_at = now()",
        (subject, mode),
    )


async def delete_subject_config(conn: Conn, subject: str) -> None:
    await conn.execute("delete from eventpipe.sr_config where subject = %s", (subject,))
