"""The outbox relay: the ``outbox`` source.

An example is ``PLUGIN``'s ``example`` (shown in docs/reference.md#source-outbox
with every key, and loaded by tests/unit/test_reference.py).

``mode: cdc`` reads the outbox table's inserts through a logical replication slot
(a publication with ``publish = 'insert'``), so rows go out in commit order; the
rows of a batch are deleted (or marked) after the broker acknowledged it and
before the slot advances.  At each start, rows still in the table (not yet
acknowledged, or older than the slot) are published first, in ``seq`` order.

``mode: poll`` is for databases without logical replication: ``select ... for
update skip locked`` in ``seq`` (insert) order, publish, then delete or mark in
the same transaction.  Insert order equals commit order for the rows of one
aggregate when the application serialises its writes per aggregate (it usually
holds the aggregate's row lock); across aggregates, the CDC mode is exact.

Both keep one active relay per table (an advisory lock; others wait as standby),
and a crash before the delete/mark re-sends the same event ids.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import Field, SecretStr, field_validator, model_validator

from eventpipe import metrics
from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.errors import is_bad_record
from eventpipe.plugin import Plugin, PluginConfig, Source, SourceConfig
from eventpipe.relay import Backoff, RelayLoop
from eventpipe.status import Activity, ComponentStatus
from eventpipe.topics import TopicName

from ..postgres_cdc import checks
from ..postgres_cdc import slot as slots
from ..postgres_cdc.config import PostgresCdcConfig, check_template, parse_table
from ..postgres_cdc.connection import connect
from ..postgres_cdc.events import Capture, Out, TableInfo
from ..postgres_cdc.lock import wait_for_lock
from ..postgres_cdc.publishing import RecordPublisher
from ..postgres_cdc.source import PostgresCdcSource
from ..postgres_cdc.transactions import ChangeHandler, Transaction
from .api import DEFAULT_TABLE, table_ident
from .router import ROUTE_FIELDS, OutboxRouter

if TYPE_CHECKING:
    from eventpipe.context import Context

OnPublish = Literal["delete", "mark", "keep"]
POLL_BACKOFF = Backoff(initial_s=0.5, retriable_cap_s=30.0, permanent_cap_s=30.0)
_COLUMNS = "seq, id, aggregatetype, aggregateid, type, payload, headers, created_at"


class OutboxConfig(PluginConfig):
    mode: Literal["cdc", "poll"] = Field(
        "cdc",
        description="cdc: read inserts through a replication slot (commit order); poll: "
        "select ... for update skip locked, for databases without logical replication",
    )
    table: str = Field(DEFAULT_TABLE, description="the outbox table, [schema.]table")
    database_url: SecretStr | None = Field(None, description="default: database.url")
    topic: str = Field(
        "outbox.event.{aggregatetype}",
        description="topic per row, from its {aggregatetype}, {type} and {name}",
    )
    on_publish: OnPublish = Field(
        "delete",
        description="what happens to a row once the broker has it: delete, mark "
        "(published_at), keep (cdc only)",
    )
    tombstone_on_empty_payload: bool = Field(
        False, description="a row without payload becomes a tombstone (key, no value)"
    )
    source_uri: str | None = Field(None, description="CloudEvent source when the row has none")
    format: Literal["binary", "structured"] = Field(
        "binary", description="Kafka encoding: ce_* headers (binary) or one JSON value"
    )
    topic_partitions: int | None = Field(
        None, ge=1, description="partitions of topics it creates; default kafka.default_partitions"
    )
    dlq_topic: TopicName | None = Field(
        None, description="rows the broker refuses for good; default <name>.dlq"
    )
    batch_size: int = Field(1000, ge=1, le=100_000, description="most rows published at once")
    poll_interval_ms: int = Field(
        50, ge=1, le=60_000, description="poll: wait between two reads when the table was empty"
    )
    # mode: cdc
    slot: str | None = Field(None, description="cdc: replication slot; default eventpipe_<name>")
    publication: str | None = Field(None, description="cdc: default eventpipe_<name>")
    create_slot: bool = Field(True, description="cdc: create the slot when missing")
    create_publication: bool = Field(True, description="cdc: create the publication when missing")
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="cdc: a heartbeat message this often keeps an idle slot advancing"
    )
    stall_timeout_s: float = Field(
        60.0, gt=0, description="cdc: a slot that does not advance this long is stalled (/readyz)"
    )
    standby_poll_s: float = Field(
        1.0, gt=0, description="how often a standby tries to take the table's lock"
    )

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        return ".".join(parse_table(v))

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        return check_template(v, ROUTE_FIELDS)

    @model_validator(mode="after")
    def _cross(self) -> OutboxConfig:
        if self.mode == "poll" and self.on_publish == "keep":
            raise ValueError(
                "mode: poll needs on_publish: delete or mark (kept rows would be sent again)"
            )
        return self

    def cdc_config(self) -> PostgresCdcConfig:
        return PostgresCdcConfig(
            tables=[self.table],
            database_url=self.database_url,
            slot=self.slot,
            publication=self.publication,
            create_slot=self.create_slot,
            create_publication=self.create_publication,
            snapshot="never",
            batch_size=max(self.batch_size, 100),
            poll_interval_ms=min(self.poll_interval_ms, 10),
            heartbeat_interval_s=self.heartbeat_interval_s,
            stall_timeout_s=self.stall_timeout_s,
            standby_poll_s=self.standby_poll_s,
            topic_partitions=self.topic_partitions,
            dlq_topic=self.dlq_topic,
            create_topics=False,
        )


class OutboxEntry(OutboxConfig, SourceConfig):
    """A ``sources:`` entry of type outbox."""

    type: Literal["outbox"] = Field(description="picks this source")


def _router(cfg: OutboxConfig, name: str) -> OutboxRouter:
    return OutboxRouter(
        name=name,
        topic_template=cfg.topic,
        source_uri=cfg.source_uri or f"/eventpipe/outbox/{name}",
        tombstone_on_empty_payload=cfg.tombstone_on_empty_payload,
        mode=cfg.format,
    )


async def settle(
    conn: psycopg.AsyncConnection[Any], table: str, ids: list[str], on_publish: OnPublish
) -> None:
    """Rows acknowledged by the broker: delete or mark them."""
    if not ids or on_publish == "keep":
        return
    if on_publish == "delete":
        q = sql.SQL("delete from {} where id = any(%s)")
    else:
        q = sql.SQL("update {} set published_at = now() where id = any(%s)")
    await conn.execute(q.format(table_ident(table)), (ids,))


async def drain_once(
    conn: psycopg.AsyncConnection[Any],
    *,
    table: str,
    router: OutboxRouter,
    out: RecordPublisher,
    on_publish: OnPublish,
    limit: int,
    relay: str,
    taken: set[str] | None = None,
) -> tuple[int, int]:
    """One transaction: lock up to ``limit`` unpublished rows in ``seq`` order,
    publish them, delete or mark them.  Returns how many rows it took and how many
    of them are events on their topics (the others are dead letters); the ids of
    the rows it settled are added to ``taken`` when given."""
    where = sql.SQL(" where published_at is null" if on_publish == "mark" else "")
    q = (
        sql.SQL("select " + _COLUMNS + " from {}").format(table_ident(table))
        + where
        + sql.SQL(" order by seq limit %s for update skip locked")
    )
    async with conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q, (limit,))
        rows = await cur.fetchall()
        await cur.close()
        if not rows:
            return 0, 0
        outs: list[Out] = []
        dead: list[DeadLetter] = []
        for row in rows:
            try:
                outs.append(router.route(row))
            except Exception as exc:
                if not is_bad_record(exc):
                    raise  # a bug (or retriable): the transaction rolls back, rows stay
                dead.append(_dead_letter(exc, row, relay))
        published = await out.publish(outs, dead)
        ids = [str(r["id"]) for r in rows]
        await settle(conn, table, ids, on_publish)
    if taken is not None:
        taken.update(ids)
    metrics.OUTBOX_PUBLISHED.labels(relay=relay).inc(published)
    return len(rows), published


def _dead_letter(exc: Exception, row: dict[str, Any], relay: str) -> DeadLetter:
    return DeadLetter.from_exception(
        exc,
        key=str(row.get("aggregateid", "")).encode() or None,
        value=orjson.dumps(row, default=str),
        headers=[("ce_id", str(row.get("id", "")).encode())],
        pipeline=relay,
        stage="source",
        origin=Origin(topic=None),
    )


# ===================================================================== cdc
class OutboxChanges:
    """The outbox table's inserts, routed by aggregatetype; their rows are deleted or
    marked once the broker acknowledged them (and before the slot advances)."""

    def __init__(self, router: OutboxRouter, *, table: str, on_publish: OnPublish) -> None:
        self.router = router
        self.table = table
        self.on_publish: OnPublish = on_publish
        self._ids: list[str] = []
        # The start-up drain runs after the slot exists, so a row committed between
        # the slot's creation and the drain's select is both taken by the drain and
        # streamed as an insert.  The drain hands over the ids it took and the WAL
        # position once it committed; a streamed insert of one of those ids at or
        # before that position is the same row, already published: skipped.  Any
        # row the drain took committed before the drain did, so its insert LSN is
        # below that position; the stream (in commit order) showing an insert past
        # it means every later transaction committed after the drain: the set is
        # dropped.  (pg_create_logical_replication_slot exports no snapshot the
        # drain could run in, so it cannot take exactly the rows the stream skips.)
        self._drained: set[str] = set()
        self._drained_upto = 0

    def drained(self, ids: set[str], upto: int) -> None:
        """The start-up drain took ``ids``; it committed at or before ``upto``."""
        self._drained, self._drained_upto = ids, upto

    def on_change(
        self,
        t: TableInfo,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        unchanged: list[str] | None,
        tx: Transaction,
        lsn: int,
        now_ms: int,
        out: list[Out],
    ) -> None:
        tx.pos += 1
        if op != "c" or after is None:
            return
        if self._drained:
            if lsn > self._drained_upto:
                self._drained = set()
            elif str(after["id"]) in self._drained:
                return  # the start-up drain published it
        self._ids.append(str(after["id"]))  # settled once acknowledged, even as a dead letter
        out.append(self.router.route(after))

    async def after_ack(self, conn: psycopg.AsyncConnection[Any], published: int) -> None:
        ids, self._ids = self._ids, []
        await settle(conn, self.table, ids, self.on_publish)
        if published:  # the events on their topics, not the dead letters
            metrics.OUTBOX_PUBLISHED.labels(relay=self.router.name).inc(published)


class OutboxCdcSource(PostgresCdcSource):
    type_name = "outbox"
    publish_filter = "insert"
    snapshots = False

    def __init__(
        self,
        config: PluginConfig,
        *,
        name: str | None = None,
        ctx: Context,
        outbox: OutboxConfig,
    ) -> None:
        super().__init__(config, name=name, ctx=ctx)
        self.outbox = outbox
        self._changes: OutboxChanges | None = None

    def change_handler(self, capture: Capture) -> ChangeHandler:
        self._changes = OutboxChanges(
            _router(self.outbox, self.name),
            table=self.outbox.table,
            on_publish=self.outbox.on_publish,
        )
        return self._changes

    def initial_topics(self, found: checks.Inspection) -> list[str]:
        return []  # routed by aggregatetype: created as they appear

    async def on_active(self, conn: psycopg.AsyncConnection[Any], created: bool) -> None:
        """Rows still in the table go out first (in seq order): those the slot is older
        than, and those whose acknowledgement the last relay did not settle."""
        if self.outbox.on_publish == "keep":
            return
        assert self.reader is not None and self._changes is not None
        total = 0
        taken: set[str] = set()
        while True:
            n, _ = await drain_once(
                conn,
                table=self.outbox.table,
                router=_router(self.outbox, self.name),
                out=self.reader.emitter.out,
                on_publish=self.outbox.on_publish,
                limit=self.outbox.batch_size,
                relay=self.name,
                taken=taken,
            )
            total += n
            if n < self.outbox.batch_size:
                break
        if taken:  # see OutboxChanges: the stream skips these rows' inserts
            self._changes.drained(taken, await slots.flush_lsn(conn))
        if total:
            self.log.info("published %d outbox rows left in %s", total, self.outbox.table)


# ==================================================================== poll
class PollRelay:
    """``mode: poll``: drains the table in ``seq`` order under an advisory lock."""

    def __init__(self, cfg: OutboxConfig, *, name: str, ctx: Context) -> None:
        self.cfg = cfg
        self.name = name
        self.ctx = ctx
        self.db_url = (cfg.database_url or ctx.settings.database.url).get_secret_value()
        self.router = _router(cfg, name)
        self.out = RecordPublisher(
            name=name,
            publisher=ctx.publisher,
            admin=ctx.admin,
            dlq=DeadLetterWriter(ctx.publisher, cfg.dlq_topic or f"{name}.dlq", pool=ctx.pool),
            topic_partitions=cfg.topic_partitions,
        )
        self.published = 0
        self.activity = Activity()
        self.log = logging.getLogger(f"eventpipe.outbox.{name}")
        self.relay = RelayLoop(f"outbox:{name}", self._session, backoff=POLL_BACKOFF, log=self.log)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await connect(
            self.db_url,
            application_name=f"eventpipe-outbox-{self.name}",
            connect_timeout_s=self.ctx.settings.database.connect_timeout_s,
        )

    async def start(self) -> None:
        conn = await self._connect()
        try:
            schema, table = parse_table(self.cfg.table)
            if await checks.table_meta(conn, schema, table) is None:
                raise checks.CdcSetupError(
                    self.name,
                    [
                        f"outbox table {self.cfg.table} does not exist: run `eventpipe migrate` "
                        "(for eventpipe.outbox) or create it with "
                        "eventpipe.connectors.outbox.api.create_table_sql()"
                    ],
                )
        finally:
            await conn.close()
        await self.relay.start()

    async def stop(self) -> None:
        await self.relay.stop(grace_s=30)

    def readiness(self) -> str:
        return self.relay.readiness()

    def status(self) -> ComponentStatus:
        relay = self.relay
        st = self.activity.status(
            name=self.name,
            kind="source",
            type="outbox",
            state=relay.component_state(),
            details={
                "mode": "poll",
                "table": self.cfg.table,
                "replication": "active" if relay.active else relay.state,
                "published": self.published,
            },
        )
        st.last_error = relay.error_info()
        st.recent_errors = relay.recent_errors()
        st.dead_letters = dict(self.out.dlq.written)
        return st

    async def _session(self, relay: RelayLoop) -> None:
        """Wait for the table's lock (standby), then drain it until stopped."""
        conn = await self._connect()
        relay.defer(conn.close)  # the lock too: held through a backoff
        if not await wait_for_lock(
            conn,
            f"outbox:{self.cfg.table}",
            self.cfg.standby_poll_s,
            stopping=lambda: relay.stopping,
            on_standby=lambda holder: relay.standby(),
        ):
            return
        relay.running()
        relay.clear_error()
        while not relay.stopping:
            n, published = await drain_once(
                conn,
                table=self.cfg.table,
                router=self.router,
                out=self.out,
                on_publish=self.cfg.on_publish,
                limit=self.cfg.batch_size,
                relay=self.name,
            )
            self.published += n
            self.activity.events_in.mark(n)
            self.activity.events_out.mark(published)
            relay.made_progress()
            if n < self.cfg.batch_size:
                await relay.sleep(self.cfg.poll_interval_ms / 1000)

    def position(self) -> int:
        return self.published


# ================================================================ the source
class OutboxRelay(Source):
    type_name = "outbox"
    Config: ClassVar[type[PluginConfig]] = OutboxConfig

    def __init__(self, config: PluginConfig, *, name: str | None = None, ctx: Context) -> None:
        super().__init__(config, name=name)
        assert isinstance(config, OutboxConfig)
        self.impl: OutboxCdcSource | PollRelay
        if config.mode == "cdc":
            self.impl = OutboxCdcSource(config.cdc_config(), name=self.name, ctx=ctx, outbox=config)
        else:
            self.impl = PollRelay(config, name=self.name, ctx=ctx)
        self.impl.relay.on_failure = self.report_failure  # a bug: the service stops

    @classmethod
    def build(cls, config: PluginConfig, name: str, ctx: Context) -> OutboxRelay:
        return cls(config, name=name, ctx=ctx)

    async def start(self) -> None:
        await self.impl.start()

    async def stop(self) -> None:
        await self.impl.stop()

    def position(self) -> Any:
        return self.impl.position()

    def health(self) -> str:
        return self.impl.readiness()

    @property
    def check_name(self) -> str:
        return f"cdc:{self.name}"

    def status(self) -> ComponentStatus:
        st = self.impl.status()
        st.details.setdefault("mode", "cdc")
        return st


PLUGIN = Plugin(
    "source",
    "outbox",
    OutboxEntry,
    OutboxRelay.build,
    "the transactional outbox table (Debezium's outbox router columns), relayed in order",
    example="""\
- type: outbox
  name: shop-outbox
  mode: cdc                         # cdc (default) | poll
  table: eventpipe.outbox
  topic: "outbox.event.{aggregatetype}"
  on_publish: delete                # delete | mark (published_at) | keep (cdc only)
  tombstone_on_empty_payload: false
""",
)
