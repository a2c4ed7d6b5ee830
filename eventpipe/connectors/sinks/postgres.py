"""The ``postgres`` sink: rows from events, with exactly-once effect.

An example is ``PLUGIN``'s ``example`` (shown in docs/reference.md#sink-postgres
with every key, and loaded by tests/unit/test_reference.py).

Exactly-once effect (ARCHITECTURE.md section 5): one transaction holds the rows
of a batch and the consumed ``(topic, partition, offset)`` high-water marks in
``eventpipe.sink_offsets`` (sink ``<pipeline>/<sink name>``).  The mark rows
are locked first (``FOR UPDATE``), so a worker that lost its partitions in a
rebalance cannot write a batch the new owner already wrote; records at or
below the mark are skipped.

Ordering guard (``order_by``, upsert mode): the conflict update carries
``where excluded.<col> >= <table>.<col> or <table>.<col> is null``, so an event
older than the row (by event time, LSN or version, whatever the column holds,
compared with the column type's ordering) leaves it alone; an equal value is
applied (the same event again, or a corrected transform of it).  A row with a
null in the column is overwritten by any event; an event with a null there never
overwrites a row that has a value.  Within a COPY batch the staging table keeps,
per key, the row with the highest value (then the last one), as one-by-one
writes would leave it.  Replays and backfills rely on it (ARCHITECTURE.md
section 5).

A batch is written with one COPY (into the table for ``insert``, into a temp
staging table for ``upsert`` / ``delete``).  When it (or what a subclass writes
besides, such as outbox rows) fails on bad data (a constraint violation, a value
of the wrong type), the records are written one by one under savepoints to find
the bad ones; those are dead-lettered before the transaction commits
(``before_commit``) and the others are kept.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
import psycopg
import psycopg.errors as pe
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import Field, SecretStr, field_validator, model_validator

from eventpipe.errors import PermanentError, SinkWriteError, is_retriable
from eventpipe.kafka.incarnation import Mark, Stale, TopicResetError
from eventpipe.plugin import PluginConfig
from eventpipe.sink import (
    BeforeCommit,
    DeliveryItem,
    PipelineSink,
    SinkPlugin,
    SinkUnavailableError,
)
from eventpipe.transforms.event_form import event_form_getter, to_event_form
from eventpipe.transforms.jq_engine import (
    DEFAULT_ENGINE,
    EngineName,
    JqCompileError,
    compile_program,
)
from eventpipe.transforms.steps import values_source

if TYPE_CHECKING:
    from eventpipe.preflight import Reach

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
SMALL_BATCH_ROWS = 128  # up to this many rows a batch is written in pipeline mode
_PATH = re.compile(r"^\s*((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*$")


def simple_path(expr: str) -> tuple[str, ...] | None:
    """``.a.b.c`` -> ``("a", "b", "c")``; None for any other jq expression."""
    m = _PATH.match(expr)
    return tuple(m.group(1)[1:].split(".")) if m else None


class RowMappingError(PermanentError):
    """A column expression failed for this event."""


class RowRejectedError(PermanentError):
    """PostgreSQL rejected this row (constraint violation, bad value)."""


class _BatchRefused(Exception):
    """PostgreSQL refused a batch's rows (bad data); its transaction rolled back."""


def _ident(v: str) -> str:
    if not _IDENT.match(v):
        raise ValueError(f"{v!r} is not a plain SQL identifier (letters, digits, _; max 63)")
    return v


class PostgresSinkConfig(PluginConfig):
    table: str = Field(description="[schema.]table; it must exist, with every mapped column")
    columns: dict[str, str] = Field(
        min_length=1,
        description="column -> jq over the event (.data.id, .time); objects and arrays are "
        "written as jsonb",
    )
    mode: Literal["insert", "upsert", "delete"] = Field(
        "insert", description="what a record does to its row"
    )
    key: list[str] = Field(
        default_factory=list,
        description="columns that identify a row (a primary key or unique index); required "
        "for upsert and delete",
    )
    method: Literal["copy", "executemany"] = Field(
        "copy", description="how a batch is written: one COPY, or one insert per row"
    )
    order_by: str | None = Field(
        None,
        description="upsert: a column (listed under columns) compared on write; an "
        "event with a lower value than the row's never overwrites it",
    )
    url: SecretStr | None = Field(
        None, description="another database; default: the service's database.url"
    )
    engine: EngineName = Field(DEFAULT_ENGINE, description="jq engine: jaq (jaq-rs) or jq (libjq)")

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        parts = v.split(".")
        if len(parts) > 2:
            raise ValueError("use table or schema.table")
        for p in parts:
            _ident(p)
        return v

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: dict[str, str]) -> dict[str, str]:
        for col, expr in v.items():
            _ident(col)
            if not isinstance(expr, str) or not expr.strip():
                raise ValueError(f"column {col!r}: needs a jq expression, e.g. .data.{col}")
        return v

    @model_validator(mode="after")
    def _key(self) -> PostgresSinkConfig:
        if self.mode in ("upsert", "delete") and not self.key:
            raise ValueError(f"mode {self.mode} needs `key:` (the columns that identify a row)")
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"key column(s) {missing} must also be listed under `columns:`")
        if self.order_by is not None:
            if self.mode != "upsert":
                raise ValueError(
                    f"order_by only applies to mode upsert (this sink is mode {self.mode})"
                )
            if self.order_by not in self.columns:
                raise ValueError(
                    f"order_by: {self.order_by!r} must also be listed under `columns:` "
                    "(e.g. updated_at: .time)"
                )
            if self.order_by in self.key:
                raise ValueError(
                    f"order_by: {self.order_by!r} is a key column; name the column that "
                    "orders versions of a row (event time, LSN, version)"
                )
        for col, expr in self.columns.items():
            try:
                compile_program(expr, self.engine)
            except JqCompileError as exc:
                raise ValueError(f"columns.{col}: {exc.message}") from exc
        return self


def json_text(v: Any) -> bytes | str:
    """A jsonb column's text: orjson (a fifth of ``json.dumps``'s time), but
    ``json.dumps`` (psycopg's default) wherever orjson would write something else:
    a value it cannot encode (an int beyond 64 bits, a key that is not a string),
    and NaN / Infinity, which orjson writes as ``null`` while ``json.dumps``'s
    ``NaN`` makes PostgreSQL refuse the row (so any ``null`` goes the slow way)."""
    try:
        out = orjson.dumps(v)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(v)
    return out if b"null" not in out else json.dumps(v)


def _sql_value(v: Any) -> Any:
    if isinstance(v, dict | list):
        return Jsonb(v, json_text)
    return v


class PostgresSink(PipelineSink):
    type_name = "postgres"
    Config = PostgresSinkConfig
    exactly_once: ClassVar[bool] = True

    def __init__(self, config: PostgresSinkConfig, *, name: str | None = None) -> None:
        super().__init__(config, name=name)
        self._pool: AsyncConnectionPool | None = None
        self._own_pool = False
        self._url: SecretStr | None = None
        self.columns: list[str] = []
        self._setup_rows(config)

    def _setup_rows(self, config: PostgresSinkConfig) -> None:
        self.cfg = config
        self._url = config.url
        self.columns = list(config.columns)
        self._program = compile_program(values_source(list(config.columns.values())), config.engine)
        # Columns that are plain paths (.id, .data.order_id) are looked up in Python
        # (~2 us a row instead of ~15 for the jq program); anything the lookup cannot
        # answer as jq would (a non-object on the way) goes to the program.
        paths = [simple_path(e) for e in config.columns.values()]
        self._paths: list[tuple[Callable[[Any], Any], tuple[str, ...]]] | None = (
            [(event_form_getter(p[0]), p[1:]) for p in paths if p is not None]
            if all(p is not None for p in paths)
            else None
        )
        parts = config.table.split(".")
        self._table = sql.Identifier(*parts)
        self._stage = sql.Identifier(f"ep_stage_{abs(hash((config.table, id(self)))) % 10**8}")
        self._build_sql()

    # ------------------------------------------------------------- SQL text
    def _build_sql(self) -> None:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        keys = sql.SQL(", ").join(sql.Identifier(c) for c in self.cfg.key)
        ph = sql.SQL(", ").join(sql.Placeholder() * len(self.columns))
        t = self._table
        others = [c for c in self.columns if c not in self.cfg.key]
        update: sql.Composable
        if others:
            update = sql.SQL("do update set ") + sql.SQL(", ").join(
                sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in others
            )
            if self.cfg.order_by is not None:
                # the upserts name the table ``ep_t`` (schema-qualified names cannot
                # be referenced in the conflict clause)
                update += sql.SQL(" where excluded.{c} >= ep_t.{c} or ep_t.{c} is null").format(
                    c=sql.Identifier(self.cfg.order_by)
                )
        else:
            update = sql.SQL("do nothing")
        key_match = (
            sql.SQL(" and ").join(
                sql.SQL("{t}.{c} is not distinct from s.{c}").format(t=t, c=sql.Identifier(c))
                for c in self.cfg.key
            )
            if self.cfg.key
            else sql.SQL("false")
        )
        mode = self.cfg.mode
        if mode == "insert":
            self._row_sql = sql.SQL("insert into {t} ({cols}) values ({ph})").format(
                t=t, cols=cols, ph=ph
            )
        elif mode == "upsert":
            self._row_sql = sql.SQL(
                "insert into {t} as ep_t ({cols}) values ({ph}) on conflict ({keys}) {update}"
            ).format(t=t, cols=cols, ph=ph, keys=keys, update=update)
        else:
            where = sql.SQL(" and ").join(
                sql.SQL("{c} is not distinct from {p}").format(
                    c=sql.Identifier(c), p=sql.Placeholder()
                )
                for c in self.cfg.key
            )
            self._row_sql = sql.SQL("delete from {t} where {w}").format(t=t, w=where)
        stage = self._stage
        self._stage_sql = sql.SQL(
            "create temp table if not exists {s} on commit delete rows as "
            "select {cols}, 0::bigint as ep_ord from {t} with no data"
        ).format(s=stage, cols=cols, t=t)
        if mode == "insert":
            self._copy_sql = sql.SQL("copy {t} ({cols}) from stdin").format(t=t, cols=cols)
            self._apply_sql: sql.Composed | None = None
        else:
            self._copy_sql = sql.SQL("copy {s} ({cols}, ep_ord) from stdin").format(
                s=stage, cols=cols
            )
            if mode == "upsert":
                # per key, the row one-by-one writes would leave: the highest ordering
                # value (nulls lowest), then the last
                latest: sql.Composable = sql.SQL("ep_ord desc")
                if self.cfg.order_by is not None:
                    latest = (
                        sql.SQL("{c} desc nulls last, ").format(c=sql.Identifier(self.cfg.order_by))
                        + latest
                    )
                self._apply_sql = sql.SQL(
                    "insert into {t} as ep_t ({cols}) select distinct on ({keys}) {cols} from {s} "
                    "order by {keys}, {latest} on conflict ({keys}) {update}"
                ).format(t=t, cols=cols, keys=keys, s=stage, latest=latest, update=update)
            else:
                self._apply_sql = sql.SQL("delete from {t} using {s} s where {m}").format(
                    t=t, s=stage, m=key_match
                )

    # ------------------------------------------------------------ lifecycle
    @classmethod
    async def preflight(cls, config: Any, reach: Reach) -> list[tuple[str, str]]:
        return await rows_preflight(config, reach)

    async def start(self) -> None:
        if self._url is not None:
            self._pool = AsyncConnectionPool(
                self._url.get_secret_value(),
                min_size=1,
                max_size=2,
                open=False,
                kwargs={"autocommit": False},
                name=f"sink-{self.name}",
            )
            self._own_pool = True
            try:
                await self._pool.open(wait=True, timeout=10)
            except PoolTimeout as exc:
                await self._pool.close()
                raise SinkUnavailableError(f"sink {self.label}: cannot connect") from exc
        else:
            self._pool = self.need_context().pool
            if self._pool is None:
                raise SinkUnavailableError(f"sink {self.label}: the service has no database")
        await super().start()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._own_pool:
            await pool.close()
        await super().close()

    # --------------------------------------------------------------- writing
    def _row(self, item: DeliveryItem, n: int) -> list[Any]:
        paths = self._paths
        if paths is None:
            return self._row_jq(item, n)
        event = item.events[n]
        row = []
        for get, rest in paths:
            v = get(event)
            for key in rest:
                if v is None:
                    break
                if type(v) is not dict:
                    return self._row_jq(item, n)  # jq's error for this value
                v = v.get(key)
            row.append(_sql_value(v))
        return row

    def _row_jq(self, item: DeliveryItem, n: int) -> list[Any]:
        try:
            values = self._program.first(to_event_form(item.events[n]))
        except PermanentError as exc:
            raise RowMappingError(f"sink {self.label}: column mapping failed: {exc}") from exc
        return [_sql_value(found[0] if found else None) for found in values]

    async def deliver(
        self, items: Sequence[DeliveryItem], *, before_commit: BeforeCommit | None = None
    ) -> dict[int, BaseException]:
        pool = self._pool
        if pool is None:
            raise SinkUnavailableError(f"sink {self.label} is not started")
        try:
            async with pool.connection() as conn:
                return await self._deliver(conn, items, before_commit)
        except PoolTimeout as exc:
            raise SinkUnavailableError(f"sink {self.label}: no database connection") from exc
        except (pe.SerializationFailure, pe.DeadlockDetected, pe.LockNotAvailable) as exc:
            raise SinkWriteError(f"sink {self.label}: {exc}", retriable=True) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise SinkUnavailableError(f"sink {self.label}: database unavailable: {exc}") from exc

    async def _deliver(
        self,
        conn: psycopg.AsyncConnection[Any],
        items: Sequence[DeliveryItem],
        before_commit: BeforeCommit | None,
    ) -> dict[int, BaseException]:
        try:
            if not conn.autocommit and sum(len(it.events) for it in items) <= SMALL_BATCH_ROWS:
                return await self._pipelined(conn, items, before_commit)
            return await self._transaction(conn, items, before_commit, one_by_one=False)
        except _BatchRefused:
            # The batch's write hit bad data and its transaction rolled back: write it
            # again, row by row under savepoints, to find the bad rows.
            return await self._transaction(conn, items, before_commit, one_by_one=True)

    async def _transaction(
        self,
        conn: psycopg.AsyncConnection[Any],
        items: Sequence[DeliveryItem],
        before_commit: BeforeCommit | None,
        *,
        one_by_one: bool,
    ) -> dict[int, BaseException]:
        failed: dict[int, BaseException] = {}
        async with conn.transaction():
            spans, todo, rows, owners = await self._prepare(conn, items, failed)
            if one_by_one:
                await self._isolate(conn, todo, rows, owners, failed)
            else:
                # No savepoint around the COPY and the other writes (two round trips a
                # batch): when they fail on bad data, the whole transaction is done
                # again record by record.
                try:
                    if rows:
                        await self._write(conn, rows)
                    await self._also_write(conn, todo, failed)
                except psycopg.DatabaseError as exc:
                    if is_retriable(exc):
                        raise
                    raise _BatchRefused from exc
            if failed and before_commit is not None:
                await before_commit(failed)
            # Every record of the batch is handled now (written, skipped as marked
            # before, or dead-lettered): each partition's mark moves to its highest
            # offset (never back: the update only raises marks).
            await self._advance_marks(conn, {tp: high for tp, (_, high) in spans.items()})
        return failed

    async def _pipelined(
        self,
        conn: psycopg.AsyncConnection[Any],
        items: Sequence[DeliveryItem],
        before_commit: BeforeCommit | None,
    ) -> dict[int, BaseException]:
        """A small batch in two round trips instead of about eight (begin, marks,
        staging table, COPY, apply, marks, commit): in pipeline mode, the marks are
        locked with the transaction's start, then the rows (one statement each),
        what a subclass writes besides, the marks' advance and the commit go
        together.  Bad data fails the whole transaction, as the COPY does
        (``_BatchRefused``: it is written again record by record)."""
        failed: dict[int, BaseException] = {}
        try:
            async with conn.pipeline() as pipeline:
                try:
                    spans, todo, rows, _ = await self._prepare(conn, items, failed)
                    async with conn.cursor() as cur:
                        if rows:
                            params = [self._row_params(r) for r in rows]
                            await cur.executemany(self._row_sql, params)
                    await self._also_write(conn, todo, failed)
                    # (before any dead letter is written: all of it is in this transaction)
                    await self._advance_marks(conn, {tp: high for tp, (_, high) in spans.items()})
                    if failed and before_commit is not None:
                        await pipeline.sync()
                        await before_commit(failed)
                    await conn.commit()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await pipeline.sync()  # takes what is left of the error's results
                    raise
        except BaseException as exc:
            # Out of pipeline mode: there, rollback() syncs first, and a sync that
            # raises the error again kept the ROLLBACK from being sent, leaving the
            # connection in the aborted transaction for the row-by-row retry.
            with contextlib.suppress(Exception):
                await conn.rollback()
            if isinstance(exc, psycopg.DatabaseError) and not is_retriable(exc):
                raise _BatchRefused from exc
            raise
        return failed

    async def _prepare(
        self,
        conn: psycopg.AsyncConnection[Any],
        items: Sequence[DeliveryItem],
        failed: dict[int, BaseException],
    ) -> tuple[
        dict[tuple[str, int], tuple[int, int]], list[DeliveryItem], list[list[Any]], list[int]
    ]:
        """Lock the batch's marks; then the records not marked yet, their rows and each
        row's record (index).  Records whose rows cannot be made go to ``failed``."""
        spans = _offset_spans(items)
        marks = await self._lock_marks(conn, sorted(spans))
        if all(low > marks.get(tp, -1) for tp, (low, _) in spans.items()):
            todo = list(items)  # the usual case: nothing of the batch is marked yet
        else:
            todo = [
                it
                for it in items
                if it.topic is None
                or it.offset is None
                or it.offset > marks.get((it.topic, it.partition or 0), -1)
            ]
        self._check_items(todo, failed)
        rows: list[list[Any]] = []
        owners: list[int] = []
        for it in todo if self.columns else ():
            if it.index in failed:
                continue
            for n in range(len(it.events)):
                try:
                    rows.append(self._row(it, n))
                    owners.append(it.index)
                except RowMappingError as exc:
                    failed[it.index] = exc
        if failed:  # drop every row of a record with a failed mapping
            keep = [i for i, o in enumerate(owners) if o not in failed]
            rows = [rows[i] for i in keep]
            owners = [owners[i] for i in keep]
        return spans, todo, rows, owners

    def _check_items(self, items: Sequence[DeliveryItem], failed: dict[int, BaseException]) -> None:
        """Subclasses fail records here, before anything of the batch is written, when
        what they write besides the rows cannot be made (so no record is half-applied)."""

    async def _also_write(
        self,
        conn: psycopg.AsyncConnection[Any],
        items: Sequence[DeliveryItem],
        failed: dict[int, BaseException],
    ) -> None:
        """Subclasses write more in the same transaction (the outbox sink)."""

    async def _write(self, conn: psycopg.AsyncConnection[Any], rows: list[list[Any]]) -> None:
        async with conn.cursor() as cur:
            if self.cfg.method == "executemany":
                await cur.executemany(self._row_sql, rows)
                return
            if self._apply_sql is not None:
                await cur.execute(self._stage_sql)
            async with cur.copy(self._copy_sql) as copy:
                if self._apply_sql is None:
                    for row in rows:
                        await copy.write_row(row)
                else:
                    for n, row in enumerate(rows):
                        await copy.write_row([*row, n])
            if self._apply_sql is not None:
                await cur.execute(self._apply_sql)

    async def _isolate(
        self,
        conn: psycopg.AsyncConnection[Any],
        items: Sequence[DeliveryItem],
        rows: list[list[Any]],
        owners: list[int],
        failed: dict[int, BaseException],
    ) -> None:
        """Write each record under a savepoint: its rows one at a time, then what
        ``_also_write`` adds for it.  A record PostgreSQL refuses any of that for
        fails alone, all of its writes rolled back."""
        by_owner: dict[int, list[list[Any]]] = {}
        for row, owner in zip(rows, owners, strict=True):
            by_owner.setdefault(owner, []).append(row)
        for it in items:
            owner = it.index
            if owner in failed or not it.events:
                continue
            try:
                async with conn.transaction(), conn.cursor() as cur:
                    for row in by_owner.get(owner, ()):
                        await cur.execute(self._row_sql, self._row_params(row))
                    await self._also_write(conn, [it], failed)
            except psycopg.DatabaseError as exc:
                if is_retriable(exc):
                    raise
                err = RowRejectedError(
                    f"sink {self.label}: {type(exc).__name__}: {str(exc).strip()}"
                )
                err.__cause__ = exc
                failed[owner] = err

    def _row_params(self, row: list[Any]) -> list[Any]:
        if self.cfg.mode == "delete":
            return [row[self.columns.index(k)] for k in self.cfg.key]
        return row

    # ----------------------------------------------------------------- marks
    def _mark_sink(self) -> str:
        return self.label

    async def marks(self, topics: Sequence[str]) -> dict[tuple[str, int], Mark]:
        pool = self._pool
        if pool is None:
            raise SinkUnavailableError(f"sink {self.label} is not started")
        try:
            async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                await cur.execute(
                    'select topic, partition, "offset", topic_id from eventpipe.sink_offsets '
                    'where sink = %s and topic = any(%s) and "offset" >= 0',
                    (self._mark_sink(), list(topics)),
                )
                return {(t, p): Mark(t, p, o, i) for t, p, o, i in await cur.fetchall()}
        except PoolTimeout as exc:
            raise SinkUnavailableError(f"sink {self.label}: no database connection") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise SinkUnavailableError(f"sink {self.label}: database unavailable: {exc}") from exc

    async def reset_marks(self, tps: Sequence[tuple[str, int]]) -> None:
        pool = self._pool
        if pool is None or not tps:
            return
        async with pool.connection() as conn, conn.transaction():
            await conn.execute(
                'update eventpipe.sink_offsets s set "offset" = -1, topic_id = null, '
                "updated_at = now() from unnest(%s::text[], %s::int[]) as u(t, p) "
                "where s.sink = %s and s.topic = u.t and s.partition = u.p",
                ([t for t, _ in tps], [p for _, p in tps], self._mark_sink()),
            )

    async def _lock_marks(
        self, conn: psycopg.AsyncConnection[Any], tps: list[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        sink = self._mark_sink()
        topics = [t for t, _ in tps]
        parts = [p for _, p in tps]
        ids = [self.topic_ids.get(t) for t in topics]
        async with conn.cursor() as cur:
            # One round trip: create the missing mark rows and lock them all (a no-op
            # update locks a row as FOR UPDATE does), returning the current marks.  A
            # worker that lost the partitions waits here and then sees the new owner's
            # marks.  Rows are locked in (topic, partition) order: no deadlock.  A
            # mark gets the topic's id when it has none yet.
            await cur.execute(
                'insert into eventpipe.sink_offsets as s (sink, topic, partition, "offset", '
                "topic_id) select %s, t, p, -1, i "
                "from unnest(%s::text[], %s::int[], %s::uuid[]) as u(t, p, i) "
                "on conflict (sink, topic, partition) do update "
                "set topic_id = coalesce(s.topic_id, excluded.topic_id) "
                'returning topic, partition, "offset", topic_id',
                (sink, topics, parts, ids),
            )
            found = await cur.fetchall()
        stale = [
            Stale(Mark(t, p, o, i), self.topic_ids[t], None)
            for t, p, o, i in found
            if i is not None and o >= 0 and self.topic_ids.get(t) not in (None, i)
        ]
        if stale:
            # Another worker reset these marks for a topic created again since this
            # worker checked them: stop rather than write into the wrong incarnation.
            raise TopicResetError(f"sink {self.label}", stale, "on_topic_reset: reset")
        return {(t, p): o for t, p, o, _ in found}

    async def _advance_marks(
        self, conn: psycopg.AsyncConnection[Any], top: dict[tuple[str, int], int]
    ) -> None:
        if not top:
            return
        await conn.execute(
            'update eventpipe.sink_offsets s set "offset" = u.o, updated_at = now() '
            "from unnest(%s::text[], %s::int[], %s::bigint[]) as u(t, p, o) "
            'where s.sink = %s and s.topic = u.t and s.partition = u.p and s."offset" < u.o',
            ([t for t, _ in top], [p for _, p in top], list(top.values()), self._mark_sink()),
        )


_PRIVILEGES = {"insert": ["INSERT"], "upsert": ["INSERT", "UPDATE"], "delete": ["SELECT", "DELETE"]}


async def table_problems(
    conn: psycopg.AsyncConnection[Any], cfg: PostgresSinkConfig
) -> list[tuple[str, str]]:
    """What would fail every row the sink writes, as ``(field, message)``: a table
    or mapped column that does not exist, an upsert key without a unique index
    (``ON CONFLICT`` needs one), a privilege the sink's statements need."""
    name = cfg.table
    async with conn.cursor() as cur:
        ident = sql.Identifier(*name.split(".")).as_string(conn)
        await cur.execute("select to_regclass(%s)::oid", (ident,))
        row = await cur.fetchone()
        if row is None or row[0] is None:
            return [("table", f"table {name} does not exist; create it (the sink does not)")]
        oid = row[0]
        await cur.execute(
            "select attname::text from pg_attribute "
            "where attrelid = %s and attnum > 0 and not attisdropped",
            (oid,),
        )
        existing = {r[0] for r in await cur.fetchall()}
        problems = [
            (f"columns.{col}", f"column {col!r} does not exist in table {name}")
            for col in cfg.columns
            if col not in existing
        ]
        if cfg.mode == "upsert" and set(cfg.key) <= existing:
            await cur.execute(
                "select exists (select 1 from pg_index i where i.indrelid = %s "
                "and i.indisunique and i.indimmediate and i.indpred is null "
                "and i.indexprs is null and (select array_agg(a.attname::text order by "
                "a.attname) from pg_attribute a where a.attrelid = i.indrelid "
                "and a.attnum = any(i.indkey)) = %s::text[])",
                (oid, sorted(cfg.key)),
            )
            found = await cur.fetchone()
            if not (found and found[0]):
                keys = ", ".join(cfg.key)
                problems.append(
                    (
                        "key",
                        f"table {name} has no primary key or unique index on ({keys}), "
                        f"which an upsert needs: create unique index on {name} ({keys})",
                    )
                )
        for privilege in _PRIVILEGES[cfg.mode]:
            await cur.execute("select has_table_privilege(%s, %s)", (oid, privilege))
            granted = await cur.fetchone()
            if not (granted and granted[0]):
                problems.append(
                    ("table", f"the database user lacks the {privilege} privilege on {name}")
                )
    return problems


async def rows_preflight(cfg: PostgresSinkConfig, reach: Reach) -> list[tuple[str, str]]:
    """:func:`table_problems` in the sink's database: its own ``url``, or the
    service's (through ``reach``)."""
    try:
        if cfg.url is None:
            if reach.pool is None:
                return []  # the service's database is not being checked
            async with reach.pool.connection() as conn:
                return await table_problems(conn, cfg)
        if reach.offline:
            reach.skip(f"database checks of sinks with their own url ({cfg.table})", "offline")
            return []
        async with await psycopg.AsyncConnection.connect(
            cfg.url.get_secret_value(), connect_timeout=max(1, int(reach.timeout_s))
        ) as conn:
            problems = await table_problems(conn, cfg)
            marks = await conn.execute("select to_regclass('eventpipe.sink_offsets')")
            found = await marks.fetchone()
            if not (found and found[0]):
                problems.append(
                    (
                        "url",
                        "this database has no eventpipe.sink_offsets (the sink keeps its "
                        "marks there): run `eventpipe migrate` with EVENTPIPE_DATABASE_URL "
                        "set to it",
                    )
                )
            return problems
    except (psycopg.OperationalError, PoolTimeout) as exc:
        reach.skip(f"database checks of the sink into {cfg.table}", f"not reachable ({exc})")
        return []


def _offset_spans(items: Sequence[DeliveryItem]) -> dict[tuple[str, int], tuple[int, int]]:
    """(lowest, highest) offset of the batch per (topic, partition), in one pass."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for it in items:
        topic, offset = it.topic, it.offset
        if topic is None or offset is None:
            continue
        k = (topic, it.partition or 0)
        span = spans.get(k)
        if span is None:
            spans[k] = (offset, offset)
        elif offset > span[1]:
            spans[k] = (span[0], offset)
        elif offset < span[0]:
            spans[k] = (offset, span[1])
    return spans


PLUGIN = SinkPlugin.of(
    PostgresSink,
    "rows in a PostgreSQL table, with the consumed offsets in the same transaction (exactly once)",
    example="""\
- postgres:
    table: public.orders              # [schema.]table
    mode: upsert                      # insert (default) | upsert | delete
    key: [id]                         # conflict / delete key; required for upsert, delete
    columns:                          # column -> jq over the event's JSON form
      id: .data.order_id
      total: .data.total
      payload: .data                  # objects and arrays are written as jsonb
      event_id: .id
      updated_at: .time
    order_by: updated_at              # upsert: an older event never overwrites a newer row
    method: copy                      # copy (default) | executemany
""",
)


__all__ = ["PostgresSink", "PostgresSinkConfig", "RowMappingError", "RowRejectedError"]
