"""Shadow mode for the tables a pipeline writes (postgres sinks, an outbox sink's
rows and outbox events): what they would write, against the rows there now.

While the shadow run goes, each such sink's rows are made as the real sink makes
them (its own column mapping; a row that cannot be made is a dead letter, as
live) and copied into a scratch table ``eventpipe.shadow_<job>_<n>`` in the
sink's database, with the columns and types of the real table, plus where each
row came from (stream, partition, offset, n-th row of the record: a batch read
again after a crash is not counted twice).  Scratch tables are unlogged, shared
by the job's worker processes, kept while the job can be resumed and dropped
once it is compared.

The comparison runs in SQL in that database, so the process holds no rows:

* upsert (key): per key, the row the run would leave (with ``order_by`` the
  highest value, else the last read), joined to the table on the key:
  ``added`` (no such row), ``changed`` (a compared column differs),
  ``unchanged``, and with ``order_by`` ``older`` (the row there is newer: the
  guard would keep it);
* insert (no key): rows with no identical row in the table are ``added``,
  the others ``unchanged`` (a multiset difference);
* delete: keys whose row is there now are ``removed``, the others ``absent``;
* outbox events are compared with the outbox table by event id as upserts are
  (``payload``, ``type``, ``aggregatetype``, ``aggregateid``).

Columns compare with their type's equality (``json`` as ``jsonb``, types
without one as text); examples show the key and, for changes, the differing
columns with the current and the shadow value.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from eventpipe.connectors.outbox.api import DEFAULT_TABLE, row_values
from eventpipe.connectors.sinks.outbox import _OUTBOX as OUTBOX_EXTRA
from eventpipe.connectors.sinks.outbox import OutboxSink
from eventpipe.connectors.sinks.postgres import PostgresSink
from eventpipe.envelope import CloudEvent
from eventpipe.errors import PermanentError
from eventpipe.pipelines.spec import SinkEntry
from eventpipe.sink import BeforeCommit, DeliveryItem, SinkUnavailableError

from .options import BackfillError
from .sinks import Outcome, WrapperSink

log = logging.getLogger(__name__)

OUTBOX_COLUMNS = ["id", "aggregatetype", "aggregateid", "type", "payload"]
POSITION = ("ep_stream", "ep_partition", "ep_offset", "ep_n")
# types without an equality operator compare as text
_TEXT_COMPARED = {"xml", "point", "line", "lseg", "box", "path", "polygon", "circle"}


@dataclass(frozen=True)
class ShadowTable:
    """One table a sink writes, compared in shadow mode."""

    sink: str
    table: str  # [schema.]table, as configured
    mode: str  # insert | upsert | delete
    columns: list[str]
    key: list[str]
    order_by: str | None
    url: str | None  # the sink's own database; None: the service's
    scratch: str  # the scratch table's name, in schema eventpipe
    outbox: bool = False  # outbox events (else the sink's rows)

    def ident(self) -> sql.Identifier:
        return sql.Identifier(*self.table.split("."))

    def scratch_ident(self) -> sql.Identifier:
        return sql.Identifier("eventpipe", self.scratch)


def scratch_prefix(job_id: str) -> str:
    return "shadow_" + job_id.replace("-", "_")


def shadow_tables(entries: Sequence[SinkEntry], job_id: str) -> list[ShadowTable]:
    """The tables the pipeline's sinks write (postgres sinks; outbox rows and events)."""
    out: list[ShadowTable] = []
    prefix = scratch_prefix(job_id)

    def add(sink: str, cfg: Any, *, outbox: bool = False) -> None:
        n = len(out)
        digest = hashlib.blake2b(f"{sink}:{n}".encode(), digest_size=4).hexdigest()
        name = f"{prefix}_{digest}"
        if outbox:  # in the database of the sink's rows
            rows = cfg.rows
            url = rows.url.get_secret_value() if rows is not None and rows.url else None
            out.append(
                ShadowTable(
                    sink, DEFAULT_TABLE, "upsert", OUTBOX_COLUMNS, ["id"], None, url, name, True
                )
            )
            return
        url = cfg.url.get_secret_value() if cfg.url is not None else None
        out.append(
            ShadowTable(
                sink, cfg.table, cfg.mode, list(cfg.columns), list(cfg.key), cfg.order_by, url, name
            )
        )

    for e in entries:
        if e.kind == "postgres":
            add(e.name, e.config)
        elif e.kind == "outbox":
            if e.config.rows is not None:
                add(e.name, e.config.rows)
            add(e.name, e.config, outbox=True)
    return out


# ------------------------------------------------------------------ scratch
async def create_scratch(conn: psycopg.AsyncConnection[Any], t: ShadowTable) -> None:
    """The scratch table (once per job; a resumed job keeps its rows)."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in t.columns)
    try:
        async with conn.transaction():
            await conn.execute(
                sql.SQL(
                    "create unlogged table if not exists {s} as select {cols}, ''::text as "
                    "ep_stream, 0::integer as ep_partition, 0::bigint as ep_offset, "
                    "0::integer as ep_n from {t} with no data"
                ).format(s=t.scratch_ident(), cols=cols, t=t.ident())
            )
            await conn.execute(
                sql.SQL(
                    "create unique index if not exists {i} on {s} "
                    "(ep_stream, ep_partition, ep_offset, ep_n)"
                ).format(i=sql.Identifier(t.scratch + "_pos"), s=t.scratch_ident())
            )
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        raise BackfillError(f"sink {t.sink}: cannot shadow {t.table}: {str(exc).strip()}") from exc


async def drop_scratch(conn: psycopg.AsyncConnection[Any], t: ShadowTable) -> None:
    await conn.execute(sql.SQL("drop table if exists {s}").format(s=t.scratch_ident()))


class ShadowRows:
    """Makes a sink's rows (its own mapping) for the scratch tables of its targets."""

    def __init__(self, entry: SinkEntry, targets: list[ShadowTable]) -> None:
        self.entry = entry
        self.targets = targets
        sink = entry.plugin.build(entry.config, entry.name, None)  # never started
        assert isinstance(sink, PostgresSink)
        self.sink: PostgresSink = sink

    def rows(
        self, items: Sequence[DeliveryItem], failed: dict[int, BaseException]
    ) -> list[list[tuple[Any, ...]]]:
        """Per target, ``(*columns, stream, partition, offset, n)`` rows of the items
        that did not fail (failures go to ``failed``, as the real sink's would)."""
        sink = self.sink
        if isinstance(sink, OutboxSink):
            sink._check_items(items, failed)
        per: list[list[tuple[Any, ...]]] = [[] for _ in self.targets]
        for it in items:
            if it.index in failed:
                continue
            where = (
                it.topic or "",
                it.partition if it.partition is not None else -1,
                it.offset if it.offset is not None else it.index,
            )
            made: list[list[tuple[Any, ...]]] = [[] for _ in self.targets]
            try:
                for k, t in enumerate(self.targets):
                    if t.outbox:
                        made_events = cast(
                            list[tuple[CloudEvent, str, str]], it.extra.get(OUTBOX_EXTRA, [])
                        )
                        for n, (ev, agg_type, agg_id) in enumerate(made_events):
                            made[k].append((*row_values(ev, agg_type, agg_id)[:5], *where, n))
                    else:
                        for n in range(len(it.events)):
                            made[k].append((*sink._row(it, n), *where, n))
            except PermanentError as exc:  # RowMappingError, or what row_values raises
                failed[it.index] = exc
                continue
            for k in range(len(self.targets)):
                per[k].extend(made[k])
        return per


async def write_scratch(
    pool: AsyncConnectionPool, t: ShadowTable, rows: list[tuple[Any, ...]]
) -> None:
    """Rows into the scratch table; positions already there are kept (a re-read)."""
    if not rows:
        return
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in [*t.columns, *POSITION])
    stage = sql.Identifier(t.scratch + "_in")
    try:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.execute(
                sql.SQL(
                    "create temp table if not exists {st} (like {s}) on commit delete rows"
                ).format(st=stage, s=t.scratch_ident())
            )
            async with cur.copy(
                sql.SQL("copy {st} ({cols}) from stdin").format(st=stage, cols=cols)
            ) as copy:
                for row in rows:
                    await copy.write_row(row)
            await cur.execute(
                sql.SQL(
                    "insert into {s} ({cols}) select {cols} from {st} on conflict do nothing"
                ).format(s=t.scratch_ident(), cols=cols, st=stage)
            )
    except PoolTimeout as exc:
        raise SinkUnavailableError(f"shadow of {t.table}: no database connection") from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise SinkUnavailableError(f"shadow of {t.table}: database unavailable: {exc}") from exc


# --------------------------------------------------------------- comparing
@dataclass
class TableComparison:
    sink: str
    table: str
    mode: str
    key: list[str]
    order_by: str | None
    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sink": self.sink,
            "table": self.table,
            "mode": self.mode,
            "key": self.key,
            "order_by": self.order_by,
            "rows": self.rows,
            **self.counts,
            "examples": self.examples,
        }


KINDS = {
    "upsert": ("added", "changed", "unchanged", "older"),
    "insert": ("added", "unchanged"),
    "delete": ("removed", "absent"),
}


async def _types(conn: psycopg.AsyncConnection[Any], t: ShadowTable) -> dict[str, str]:
    cur = await conn.execute(
        "select a.attname, t.typname from pg_attribute a join pg_type t on t.oid = a.atttypid "
        "where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped",
        (f"eventpipe.{t.scratch}",),
    )
    return {n: ty for n, ty in await cur.fetchall()}


def _value(alias: str, column: str, typ: str) -> sql.Composable:
    ref = sql.SQL("{a}.{c}").format(a=sql.Identifier(alias), c=sql.Identifier(column))
    if typ == "json":
        return ref + sql.SQL("::jsonb")
    if typ in _TEXT_COMPARED:
        return ref + sql.SQL("::text")
    return ref


def _latest(t: ShadowTable) -> sql.Composable:
    """The shadow row per key the run would leave."""
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in t.key)
    order: list[sql.Composable] = [sql.Identifier(k) for k in t.key]
    if t.order_by is not None:
        order.append(sql.SQL("{} desc nulls last").format(sql.Identifier(t.order_by)))
    order.append(sql.SQL("ep_offset desc, ep_n desc"))
    return sql.SQL("select distinct on ({keys}) * from {s} order by {o}").format(
        keys=keys, s=t.scratch_ident(), o=sql.SQL(", ").join(order)
    )


def _keyed_sql(t: ShadowTable, types: dict[str, str]) -> sql.Composable:
    """``kind, shadow row, current row`` per key (upsert and delete)."""
    on = sql.SQL(" and ").join(sql.SQL("t.{k} = s.{k}").format(k=sql.Identifier(k)) for k in t.key)
    kind: sql.Composable
    if t.mode == "delete":
        kind = sql.SQL("case when t.ctid is null then 'absent' else 'removed' end")
    else:
        others = [c for c in t.columns if c not in t.key]
        differ = (
            sql.SQL(" or ").join(
                sql.SQL("{a} is distinct from {b}").format(
                    a=_value("s", c, types.get(c, "")), b=_value("t", c, types.get(c, ""))
                )
                for c in others
            )
            if others
            else sql.SQL("false")
        )
        older: sql.Composable = sql.SQL("false")
        if t.order_by is not None:
            o = sql.Identifier(t.order_by)
            older = sql.SQL("not coalesce(s.{o} >= t.{o} or t.{o} is null, false)").format(o=o)
        kind = sql.SQL(
            "case when t.ctid is null then 'added' when {older} then 'older' "
            "when {differ} then 'changed' else 'unchanged' end"
        ).format(older=older, differ=differ)
    return sql.SQL(
        "select {kind} as kind, to_jsonb(s) as sv, to_jsonb(t) as tv "
        "from ({latest}) s left join {t} t on {on}"
    ).format(kind=kind, latest=_latest(t), t=t.ident(), on=on)


def _insert_sql(t: ShadowTable, types: dict[str, str]) -> sql.Composable:
    """Shadow rows with no identical row in the table (a multiset difference)."""

    def cols(alias: str) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{v} as {c}").format(v=_value(alias, c, types.get(c, "")), c=sql.Identifier(c))
            for c in t.columns
        )

    return sql.SQL("select {s} from {st} s except all select {tc} from {t} t").format(
        s=cols("s"), st=t.scratch_ident(), tc=cols("t"), t=t.ident()
    )


def _strip(row: dict[str, Any] | None, columns: Sequence[str]) -> dict[str, Any]:
    return {c: row.get(c) for c in columns} if row else {}


async def compare_table(
    conn: psycopg.AsyncConnection[Any], t: ShadowTable, *, limit: int
) -> TableComparison:
    result = TableComparison(t.sink, t.table, t.mode, t.key, t.order_by)
    result.counts = dict.fromkeys(KINDS[t.mode], 0)
    result.examples = {k: [] for k in KINDS[t.mode] if k != "unchanged"}
    types = await _types(conn, t)
    if t.mode == "insert":
        cur = await conn.execute(sql.SQL("select count(*) from {s}").format(s=t.scratch_ident()))
        row = await cur.fetchone()
        result.rows = int(row[0]) if row else 0
        diff = _insert_sql(t, types)
        cur = await conn.execute(sql.SQL("select count(*) from ({d}) x").format(d=diff))
        row = await cur.fetchone()
        added = int(row[0]) if row else 0
        result.counts.update(added=added, unchanged=result.rows - added)
        if limit:
            cur = await conn.execute(
                sql.SQL("select to_jsonb(x) from ({d}) x limit %s").format(d=diff), (limit,)
            )
            result.examples["added"] = [{"row": r[0]} for r in await cur.fetchall()]
        return result
    diff = _keyed_sql(t, types)
    cur = await conn.execute(
        sql.SQL("select kind, count(*) from ({d}) x group by kind").format(d=diff)
    )
    for kind, n in await cur.fetchall():
        result.counts[kind] = int(n)
    result.rows = sum(result.counts.values())
    if not limit:
        return result
    cur = await conn.execute(
        sql.SQL(
            "select kind, sv, tv from (select *, row_number() over (partition by kind "
            "order by sv) as rn from ({d}) x where kind <> 'unchanged') y where rn <= %s "
            "order by kind, rn"
        ).format(d=diff),
        (limit,),
    )
    others = [c for c in t.columns if c not in t.key]
    for kind, sv, tv in await cur.fetchall():
        key = {k: sv.get(k) for k in t.key}
        if kind == "added":
            ex: dict[str, Any] = {"key": key, "row": _strip(sv, t.columns)}
        elif kind == "changed":
            ex = {
                "key": key,
                "differences": [
                    {"column": c, "current": tv.get(c), "shadow": sv.get(c)}
                    for c in others
                    if tv.get(c) != sv.get(c)
                ],
            }
        elif kind == "older":
            assert t.order_by is not None
            ex = {
                "key": key,
                "order_by": {
                    "column": t.order_by,
                    "current": tv.get(t.order_by),
                    "shadow": sv.get(t.order_by),
                },
            }
        else:
            ex = {"key": key}
        result.examples[kind].append(ex)
    return result


async def compare_tables(
    targets: Sequence[ShadowTable], default_url: str, *, limit: int, drop: bool = True
) -> list[dict[str, Any]]:
    """Each target against its table; the scratch tables dropped afterwards."""
    out: list[dict[str, Any]] = []
    for t in targets:
        async with await psycopg.AsyncConnection.connect(
            t.url or default_url, autocommit=True
        ) as conn:
            out.append((await compare_table(conn, t, limit=limit)).as_dict())
            if drop:
                with contextlib.suppress(psycopg.Error):
                    await drop_scratch(conn, t)
    return out


class ShadowTableSink(WrapperSink):
    """In a shadow lane, in place of a postgres / outbox sink: its rows into the
    scratch tables of its targets."""

    def __init__(
        self,
        rows: ShadowRows,
        pools: Sequence[AsyncConnectionPool],
        outcome: Outcome,
    ) -> None:
        super().__init__(rows.entry.name, outcome)
        self.made = rows
        self.pools = pools

    async def deliver(
        self, items: Sequence[DeliveryItem], *, before_commit: BeforeCommit | None = None
    ) -> dict[int, BaseException]:
        failed: dict[int, BaseException] = {}
        per = self.made.rows(items, failed)
        for t, pool, rows in zip(self.made.targets, self.pools, per, strict=True):
            await write_scratch(pool, t, rows)
        self._done("delivered", [it.index for it in items if it.index not in failed and it.events])
        return failed
