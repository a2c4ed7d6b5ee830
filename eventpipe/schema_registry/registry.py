"""The registry's operations, over the Postgres store: what the REST routes call.

Every psycopg / pool failure becomes :class:`StoreError` (50001) here, where it
enters; everything else raised is a :class:`RegistryError` with its Confluent code.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from eventpipe.errors import is_retriable

from . import compat, store
from .errors import (
    IncompatibleSchema,
    InvalidMode,
    InvalidSchema,
    InvalidVersion,
    OperationNotPermitted,
    ReferenceExists,
    SchemaNotFound,
    StoreError,
    SubjectConfigNotFound,
    SubjectModeNotFound,
    SubjectNotFound,
    SubjectNotSoftDeleted,
    SubjectSoftDeleted,
    VersionNotFound,
    VersionNotSoftDeleted,
    VersionSoftDeleted,
)
from .models import (
    DEFAULT_COMPATIBILITY,
    DEFAULT_MODE,
    MODES,
    CompatibilityResult,
    RegisteredSchema,
    Schema,
    SchemaReference,
)
from .schemas import ParsedSchema, ResolvedReference, parse
from .store import GLOBAL, Conn

MAX_VERSION = 2**31 - 1
MAX_REFERENCE_DEPTH = 32
LATEST = "latest"


def parse_version(value: object) -> int | str:
    """``latest`` (or -1) stays ``"latest"``; otherwise an int in [1, 2^31-1]."""
    if isinstance(value, str) and value.lower() == LATEST:
        return LATEST
    try:
        number = int(str(value))
    except ValueError:
        raise InvalidVersion(value) from None
    if number == -1:
        return LATEST
    if not 1 <= number <= MAX_VERSION:
        raise InvalidVersion(value)
    return number


def check_subject(subject: str) -> None:
    if not subject or not subject.strip() or any(ord(c) < 32 for c in subject):
        raise InvalidSchema(f"invalid subject name {subject!r}")


class SchemaRegistry:
    """Confluent's registry semantics over :mod:`.store`.  ``pool`` may be a callable
    returning the pool, for a service whose pool is opened after the routes."""

    def __init__(
        self,
        pool: AsyncConnectionPool | Callable[[], AsyncConnectionPool | None],
        *,
        cache_size: int = 1000,
    ) -> None:
        self._pool = pool
        self._parsed: OrderedDict[int, ParsedSchema] = OrderedDict()
        self._cache_size = cache_size

    def pool(self) -> AsyncConnectionPool:
        pool = self._pool() if callable(self._pool) else self._pool
        if pool is None:
            raise StoreError("the schema registry has no database connection")
        return pool

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        try:
            async with self.pool().connection() as conn, conn.transaction():
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            err = StoreError(f"Error in the backend data store: {type(exc).__name__}: {exc}")
            err.retriable = is_retriable(exc)
            raise err from exc

    # ------------------------------------------------------------------ parsing

    async def _parsed_by_id(self, conn: Conn, schema_id: int, depth: int = 0) -> ParsedSchema:
        cached = self._parsed.get(schema_id)
        if cached is not None:
            self._parsed.move_to_end(schema_id)
            return cached
        stored = await store.get_schema(conn, schema_id, registered=False)
        if stored is None:
            raise SchemaNotFound(f"Schema {schema_id} not found")
        refs = await self._resolve(conn, stored.references, depth + 1)
        parsed = parse(stored.schema_type, stored.text, refs)
        self._parsed[schema_id] = parsed
        if len(self._parsed) > self._cache_size:
            self._parsed.popitem(last=False)
        return parsed

    async def _resolve(
        self, conn: Conn, refs: tuple[SchemaReference, ...], depth: int = 0
    ) -> tuple[ResolvedReference, ...]:
        if depth > MAX_REFERENCE_DEPTH:
            raise InvalidSchema(f"references nest deeper than {MAX_REFERENCE_DEPTH} levels")
        out: list[ResolvedReference] = []
        for ref in refs:
            if not ref.name or not ref.subject:
                raise InvalidSchema(f"reference {ref.to_dict()} needs a name and a subject")
            rows = await store.versions(conn, ref.subject, include_deleted=True)
            if ref.version == -1:
                live = [r for r in rows if not r.deleted]
                row = live[-1] if live else None
            else:
                row = next((r for r in rows if r.version == ref.version), None)
            if row is None:
                raise InvalidSchema(
                    f"reference {ref.name!r}: subject {ref.subject!r} version {ref.version} "
                    "is not registered"
                )
            parsed = await self._parsed_by_id(conn, row.schema_id, depth)
            out.append(
                ResolvedReference(SchemaReference(ref.name, ref.subject, row.version), parsed)
            )
        return tuple(out)

    async def parse(self, conn: Conn, schema: Schema) -> ParsedSchema:
        refs = await self._resolve(conn, schema.references)
        return parse(schema.schema_type, schema.schema, refs)

    # ---------------------------------------------------------------- settings

    async def _compatibility(self, conn: Conn, subject: str) -> str:
        level, _ = await store.get_config(conn, subject)
        if level is None:
            level, _ = await store.get_config(conn, GLOBAL)
        return level or DEFAULT_COMPATIBILITY

    async def _mode(self, conn: Conn, subject: str) -> str:
        _, mode = await store.get_config(conn, subject)
        if mode is None:
            _, mode = await store.get_config(conn, GLOBAL)
        return mode or DEFAULT_MODE

    async def get_compatibility(self, subject: str | None, *, default_to_global: bool) -> str:
        async with self._tx() as conn:
            if subject is None:
                level, _ = await store.get_config(conn, GLOBAL)
                return level or DEFAULT_COMPATIBILITY
            level, _ = await store.get_config(conn, subject)
            if level is not None:
                return level
            if default_to_global:
                return await self._compatibility(conn, subject)
            raise SubjectConfigNotFound(subject)

    async def set_compatibility(self, subject: str | None, level: object) -> str:
        normalized = compat.normalize_level(level)
        if subject is not None:
            check_subject(subject)
        async with self._tx() as conn:
            await store.set_compatibility(conn, subject or GLOBAL, normalized)
        return normalized

    async def delete_compatibility(self, subject: str | None) -> str:
        """Back to the default (global) or to the global level (subject); returns
        the level that was in force."""
        async with self._tx() as conn:
            key = subject or GLOBAL
            level, _ = await store.get_config(conn, key)
            if subject is not None and level is None:
                if not await store.versions(conn, subject, include_deleted=True):
                    raise SubjectNotFound(subject)
                raise SubjectConfigNotFound(subject)
            await store.set_compatibility(conn, key, None)
            return level or DEFAULT_COMPATIBILITY

    async def get_mode(self, subject: str | None, *, default_to_global: bool) -> str:
        async with self._tx() as conn:
            if subject is None:
                _, mode = await store.get_config(conn, GLOBAL)
                return mode or DEFAULT_MODE
            _, mode = await store.get_config(conn, subject)
            if mode is not None:
                return mode
            if default_to_global:
                return await self._mode(conn, subject)
            raise SubjectModeNotFound(subject)

    async def set_mode(self, subject: str | None, mode: object, *, force: bool) -> str:
        if not isinstance(mode, str) or mode.upper() not in MODES:
            raise InvalidMode(mode)
        mode = mode.upper()
        if subject is not None:
            check_subject(subject)
        async with self._tx() as conn:
            if mode == "IMPORT" and not force and await store.any_subject(conn, subject):
                raise OperationNotPermitted(
                    "Cannot import since found existing subjects; delete them first or pass "
                    "force=true"
                )
            await store.set_mode(conn, subject or GLOBAL, mode)
        return mode

    async def delete_mode(self, subject: str) -> str:
        async with self._tx() as conn:
            _, mode = await store.get_config(conn, subject)
            if mode is None:
                raise SubjectModeNotFound(subject)
            await store.set_mode(conn, subject, None)
            return mode

    # ---------------------------------------------------------------- register

    async def register(
        self,
        subject: str,
        schema: Schema,
        *,
        schema_id: int | None = None,
        version: int | None = None,
    ) -> RegisteredSchema:
        """Register ``schema`` under ``subject``: the existing registration when the
        subject already holds it, else a new version after the compatibility check.
        ``schema_id`` / ``version`` may be given in IMPORT mode only."""
        check_subject(subject)
        async with self._tx() as conn:
            await store.lock_subject(conn, subject)
            mode = await self._mode(conn, subject)
            if mode == "READONLY":
                raise OperationNotPermitted(f"Subject {subject} is in read-only mode")
            if (schema_id is not None or version is not None) and mode != "IMPORT":
                raise OperationNotPermitted(
                    "a schema id or version may only be given in IMPORT mode"
                )
            parsed = await self.parse(conn, schema)
            found = await store.find_in_subject(
                conn, subject, parsed.fingerprint, include_deleted=False
            )
            if found is not None and (schema_id is None or schema_id == found.schema_id):
                return self._registered(subject, found.version, found.schema_id, parsed)
            if mode != "IMPORT":
                await self._check(conn, subject, parsed)
            if schema_id is None:
                sid = await store.ensure_schema(conn, parsed)
            else:
                sid = await self._import_id(conn, parsed, schema_id)
            if version is None:
                version = await store.next_version(conn, subject)
            elif any(
                v.version == version
                for v in await store.versions(conn, subject, include_deleted=True)
            ):
                raise OperationNotPermitted(
                    f"version {version} of subject {subject!r} already exists"
                )
            await store.insert_version(conn, subject, version, sid)
            return self._registered(subject, version, sid, parsed)

    async def _import_id(self, conn: Conn, parsed: ParsedSchema, schema_id: int) -> int:
        if schema_id < 1:
            raise OperationNotPermitted(f"schema id {schema_id} is not positive")
        existing = await store.get_schema(conn, schema_id, registered=False)
        if existing is not None:
            if existing.fingerprint != parsed.fingerprint:
                raise OperationNotPermitted(
                    f"Overwrite new schema with id {schema_id} is not permitted."
                )
            return schema_id
        other = await store.find_schema(conn, parsed.fingerprint)
        if other is not None:
            raise OperationNotPermitted(
                f"this schema is already registered with id {other.id}, not {schema_id}"
            )
        await store.insert_schema_with_id(conn, parsed, schema_id)
        return schema_id

    async def _check(self, conn: Conn, subject: str, parsed: ParsedSchema) -> None:
        level = await self._compatibility(conn, subject)
        messages = await self._messages(conn, subject, level, parsed, None)
        if messages:
            raise IncompatibleSchema(subject, messages)

    async def _messages(
        self, conn: Conn, subject: str, level: str, parsed: ParsedSchema, against: int | None
    ) -> list[str]:
        if level == "NONE":
            return []
        live = await store.versions(conn, subject, include_deleted=False)
        if against is not None:
            live = [v for v in live if v.version == against]
        elif not level.endswith("_TRANSITIVE"):
            live = live[-1:]
        previous = [(v.version, await self._parsed_by_id(conn, v.schema_id)) for v in live]
        return compat.check(level, parsed, previous)

    @staticmethod
    def _registered(
        subject: str, version: int, schema_id: int, parsed: ParsedSchema
    ) -> RegisteredSchema:
        return RegisteredSchema(
            subject,
            version,
            schema_id,
            Schema(parsed.text, parsed.schema_type, parsed.reference_list),
        )

    async def check_compatibility(
        self, subject: str, schema: Schema, version: object | None
    ) -> CompatibilityResult:
        """Against one version (``latest`` or a number) or, with ``version`` None, the
        versions the subject's level names.  A subject without versions is compatible
        with anything when no version is named."""
        async with self._tx() as conn:
            parsed = await self.parse(conn, schema)
            level = await self._compatibility(conn, subject)
            live = await store.versions(conn, subject, include_deleted=False)
            against: int | None = None
            if version is not None:
                wanted = parse_version(version)
                if not live:
                    raise SubjectNotFound(subject)
                if wanted == LATEST:
                    against = live[-1].version
                elif any(v.version == wanted for v in live):
                    against = int(wanted)
                else:
                    raise VersionNotFound(subject, wanted)
            messages = await self._messages(conn, subject, level, parsed, against)
            return CompatibilityResult(not messages, tuple(messages))

    # ------------------------------------------------------------------ reading

    async def lookup(self, subject: str, schema: Schema, *, deleted: bool) -> RegisteredSchema:
        async with self._tx() as conn:
            rows = await store.versions(conn, subject, include_deleted=deleted)
            if not rows:
                raise SubjectNotFound(subject)
            parsed = await self.parse(conn, schema)
            found = await store.find_in_subject(
                conn, subject, parsed.fingerprint, include_deleted=deleted
            )
            if found is None:
                raise SchemaNotFound("Schema not found")
            stored = await self._parsed_by_id(conn, found.schema_id)
            return self._registered(subject, found.version, found.schema_id, stored)

    async def subjects(self, *, deleted: bool, deleted_only: bool, prefix: str) -> list[str]:
        async with self._tx() as conn:
            return await store.subjects(
                conn, include_deleted=deleted, deleted_only=deleted_only, prefix=prefix
            )

    async def versions(self, subject: str, *, deleted: bool) -> list[int]:
        async with self._tx() as conn:
            rows = await store.versions(conn, subject, include_deleted=deleted)
            if not rows:
                raise SubjectNotFound(subject)
            return [r.version for r in rows]

    async def _version_row(
        self, conn: Conn, subject: str, version: object, *, deleted: bool
    ) -> store.StoredVersion:
        wanted = parse_version(version)
        rows = await store.versions(conn, subject, include_deleted=deleted)
        if not rows:
            raise SubjectNotFound(subject)
        if wanted == LATEST:
            return rows[-1]
        row = next((r for r in rows if r.version == wanted), None)
        if row is None:
            raise VersionNotFound(subject, wanted)
        return row

    async def get_version(
        self, subject: str, version: object, *, deleted: bool
    ) -> RegisteredSchema:
        async with self._tx() as conn:
            row = await self._version_row(conn, subject, version, deleted=deleted)
            stored = await store.get_schema(conn, row.schema_id, registered=False)
            assert stored is not None
            return RegisteredSchema(
                subject,
                row.version,
                row.schema_id,
                Schema(stored.text, stored.schema_type, stored.references),
            )

    async def referenced_by(self, subject: str, version: object) -> list[int]:
        async with self._tx() as conn:
            row = await self._version_row(conn, subject, version, deleted=True)
            return await store.referenced_by(conn, subject, row.version, include_deleted=False)

    async def schema_by_id(self, schema_id: int) -> Schema:
        async with self._tx() as conn:
            stored = await store.get_schema(conn, schema_id)
            if stored is None:
                raise SchemaNotFound(f"Schema {schema_id} not found")
            return Schema(stored.text, stored.schema_type, stored.references)

    async def schema_versions(
        self, schema_id: int, *, deleted: bool, subject: str | None = None
    ) -> list[tuple[str, int]]:
        async with self._tx() as conn:
            if await store.get_schema(conn, schema_id) is None:
                raise SchemaNotFound(f"Schema {schema_id} not found")
            return await store.versions_of_schema(
                conn, schema_id, include_deleted=deleted, subject=subject
            )

    # ----------------------------------------------------------------- deleting

    async def _writable(self, conn: Conn, subject: str) -> None:
        if await self._mode(conn, subject) == "READONLY":
            raise OperationNotPermitted(f"Subject {subject} is in read-only mode")

    async def _not_referenced(
        self, conn: Conn, subject: str, version_list: list[int], *, permanent: bool
    ) -> None:
        for v in version_list:
            ids = await store.referenced_by(conn, subject, v, include_deleted=permanent)
            if ids:
                raise ReferenceExists(
                    f"One or more references exist to the schema {{subject={subject}, "
                    f"version={v}}} from schema id(s) {ids}"
                )

    async def delete_subject(self, subject: str, *, permanent: bool) -> list[int]:
        async with self._tx() as conn:
            await store.lock_subject(conn, subject)
            await self._writable(conn, subject)
            rows = await store.versions(conn, subject, include_deleted=True)
            if not rows:
                raise SubjectNotFound(subject)
            live = [r.version for r in rows if not r.deleted]
            if not permanent:
                if not live:
                    raise SubjectSoftDeleted(subject)
                await self._not_referenced(conn, subject, live, permanent=False)
                await store.mark_deleted(conn, subject, live)
                return live
            if live:
                raise SubjectNotSoftDeleted(subject)
            every = [r.version for r in rows]
            await self._not_referenced(conn, subject, every, permanent=True)
            await store.delete_versions(conn, subject, every)
            await store.delete_subject_config(conn, subject)
            return every

    async def delete_version(self, subject: str, version: object, *, permanent: bool) -> int:
        async with self._tx() as conn:
            await store.lock_subject(conn, subject)
            await self._writable(conn, subject)
            wanted = parse_version(version)
            rows = await store.versions(conn, subject, include_deleted=True)
            if not rows:
                raise SubjectNotFound(subject)
            if wanted == LATEST:
                candidates = rows if permanent else [r for r in rows if not r.deleted]
                if not candidates:
                    raise SubjectNotFound(subject)
                row = candidates[-1]
            else:
                found = next((r for r in rows if r.version == wanted), None)
                if found is None:
                    raise VersionNotFound(subject, wanted)
                row = found
            if not permanent:
                if row.deleted:
                    raise VersionSoftDeleted(subject, row.version)
                await self._not_referenced(conn, subject, [row.version], permanent=False)
                await store.mark_deleted(conn, subject, [row.version])
            else:
                if not row.deleted:
                    raise VersionNotSoftDeleted(subject, row.version)
                await self._not_referenced(conn, subject, [row.version], permanent=True)
                await store.delete_versions(conn, subject, [row.version])
            return row.version
