"""The ``postgres_cdc`` source: lifecycle, standby, stall alarm, status.

``start()`` checks the database (wal_level, role, tables, keys, replica identity,
publication, slot) and fails with every problem and the command that fixes it.
Then a background task waits for the slot's advisory lock (a second process
waits here as standby), sets up what is missing, and runs the reader; a
retriable failure (database or broker gone) reconnects with backoff.  A monitor
task watches the slot's lag and raises the stall alarm.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg

from eventpipe import metrics
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.loop import cancel
from eventpipe.plugin import Plugin, PluginConfig, Source
from eventpipe.relay import Backoff, RelayLoop
from eventpipe.status import Activity, ComponentStatus

from . import checks
from . import slot as slots
from .config import PostgresCdcConfig, PostgresCdcEntry
from .connection import connect
from .emitting import Emitter
from .events import Capture, EventBuilder
from .heartbeat import StallDetector
from .initial_snapshot import snapshot_all
from .lock import wait_for_lock
from .lsn import format_lsn
from .publishing import RecordPublisher
from .reader import CdcReader, ReaderOptions
from .snapshot_window import SnapshotWindow
from .state import StateStore
from .transactions import ChangeEvents, ChangeHandler, TransactionAssembler
from .types import TypeRegistry

if TYPE_CHECKING:
    from eventpipe.context import Context

BACKOFF = Backoff(initial_s=0.5, retriable_cap_s=10.0, permanent_cap_s=60.0)


class PostgresCdcSource(Source):
    type_name = "postgres_cdc"
    Config: ClassVar[type[PluginConfig]] = PostgresCdcConfig
    config: PostgresCdcConfig
    publish_filter: ClassVar[str | None] = None  # publication's publish option (None: all)
    snapshots: ClassVar[bool] = True  # incremental snapshots (signals, initial)

    def __init__(self, config: PluginConfig, *, name: str | None = None, ctx: Context) -> None:
        super().__init__(config, name=name)
        cfg = self.cdc_config
        self.ctx = ctx
        self.slot = cfg.slot_name(self.name)
        self.publication = cfg.publication_name(self.name)
        url = cfg.database_url or ctx.settings.database.url
        self.db_url = url.get_secret_value()
        assert ctx.pool is not None, "the CDC source needs the service's database pool"
        self.state = StateStore(ctx.pool, self.slot)
        self.registry = TypeRegistry(cfg.numeric)
        self.dlq = DeadLetterWriter(ctx.publisher, cfg.dlq(self.name), pool=ctx.pool)
        self.detector = StallDetector(cfg.stall_timeout_s)
        self.reader: CdcReader | None = None
        self.database = ""
        self.ident = f"{socket.gethostname()}:{os.getpid()}"
        self.relay = RelayLoop(
            f"postgres_cdc:{self.name}",
            self._session,
            backoff=BACKOFF,
            log=self.log,
            on_failure=self.report_failure,  # a bug: the service stops (exit 3)
        )
        self._monitor: asyncio.Task[None] | None = None
        self._status_events = 0
        self.activity = Activity()
        self.slot_lag_bytes: int | None = None

    @classmethod
    def build(cls, config: PluginConfig, name: str, ctx: Context) -> PostgresCdcSource:
        return cls(config, name=name, ctx=ctx)

    @property
    def cdc_config(self) -> PostgresCdcConfig:
        assert isinstance(self.config, PostgresCdcConfig)
        return self.config

    # ------------------------------------------------------------ lifecycle
    @property
    def active(self) -> bool:
        """This process holds the slot's lock and reads it."""
        return self.relay.active

    @property
    def error(self) -> str | None:
        return self.relay.error

    async def start(self) -> None:
        if self.relay.task is not None:
            return
        conn = await self._connect("check")
        try:
            found = await self._inspect(conn)
        finally:
            await conn.close()
        if found.problems:
            raise checks.CdcSetupError(self.name, found.problems)
        await self.relay.start()

    async def stop(self) -> None:
        """Finish the batch in flight (it is published and the slot advanced), then stop."""
        await self.relay.stop(grace_s=30)

    def position(self) -> int | None:
        return self.reader.position if self.reader is not None else None

    async def wait_position(self, lsn: int, within_s: float = 30.0) -> None:
        """Until the slot was advanced to ``lsn`` or beyond (tests, tools)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while loop.time() < deadline:
            if self.reader is not None and self.reader.position >= lsn:
                return
            task = self.relay.task
            if task is not None and task.done():
                task.result()
                raise RuntimeError(f"source {self.name} stopped (last error: {self.error})")
            await asyncio.sleep(0.02)
        raise TimeoutError(
            f"source {self.name} did not reach {format_lsn(lsn)} within {within_s:.0f}s "
            f"(at {format_lsn(self.position() or 0)}; last error: {self.error})"
        )

    # ------------------------------------------------------------ internals
    async def _connect(self, role: str) -> psycopg.AsyncConnection[Any]:
        return await connect(
            self.db_url,
            application_name=f"eventpipe-cdc-{self.name}-{role}",
            connect_timeout_s=self.ctx.settings.database.connect_timeout_s,
        )

    async def _inspect(self, conn: psycopg.AsyncConnection[Any]) -> checks.Inspection:
        cfg = self.cdc_config
        streaming = cfg.snapshot != "initial_only"
        found = await checks.inspect(
            conn,
            source=self.name,
            tables=cfg.tables,
            slot=self.slot,
            publication=self.publication,
            key_columns=cfg.key_columns,
            create_slot=cfg.create_slot,
            create_publication=cfg.create_publication,
            require_full=cfg.require_replica_identity_full,
            streaming=streaming,
        )
        self.database = found.database
        return found

    def builder(self) -> EventBuilder:
        cfg = self.cdc_config
        return EventBuilder(
            name=self.name,
            prefix=cfg.prefix(self.name),
            type_prefix=cfg.types_prefix(self.name),
            source_uri=cfg.source_attr(self.name),
            database=self.database,
            topic_template=cfg.topic,
            message_topic=cfg.message_topic,
            toast_placeholder=cfg.toast_placeholder,
            mode=cfg.mode,
            tombstones_on_delete=cfg.tombstones_on_delete,
        )

    def change_handler(self, capture: Capture) -> ChangeHandler:
        """What row changes become (the outbox relay routes its rows instead)."""
        return ChangeEvents(capture)

    def make_reader(self, keys: dict[str, list[str]]) -> CdcReader:
        """The reader of this source's slot, from its parts."""
        cfg = self.cdc_config
        capture = Capture(frozenset(cfg.tables), keys, self.builder(), self.registry)
        emitter = Emitter(
            RecordPublisher(
                name=self.name,
                publisher=self.ctx.publisher,
                admin=self.ctx.admin,
                dlq=self.dlq,
                topic_partitions=cfg.topic_partitions,
            )
        )
        window = (
            SnapshotWindow(
                capture,
                slot=self.slot,
                state=self.state,
                connect=lambda: self._connect("snapshot"),
                chunk_size=cfg.snapshot_chunk_size,
                poll_s=cfg.signal_poll_s,
                dead=emitter.dead_letter,
                log=self.log,
            )
            if self.snapshots
            else None
        )
        changes = TransactionAssembler(
            capture,
            handler=self.change_handler(capture),
            window=window,
            emit_messages=cfg.emit_messages,
            dead=emitter.dead_letter,
            log=self.log,
        )
        options = ReaderOptions.of(cfg, self.name)
        return CdcReader(options, changes=changes, emitter=emitter, log=self.log)

    def initial_topics(self, found: checks.Inspection) -> list[str]:
        cfg = self.cdc_config
        out = [cfg.topic_for(self.name, m.schema, m.table) for m in found.tables.values()]
        if cfg.emit_messages:
            out.append(cfg.message_topic.format(prefix=cfg.prefix(self.name), name=self.name))
        return out

    async def _session(self, relay: RelayLoop) -> None:
        """Wait for the slot's lock (standby), then read until stopped.  The connection
        (the lock) and the lag monitor last until the session is over: through the
        backoff after a failure (:mod:`eventpipe.relay`)."""
        relay.defer(self._stop_monitor)
        relay.defer(self._inactive)
        conn = await self._connect("reader")
        relay.defer(conn.close)
        before = self.reader
        try:
            if not await wait_for_lock(
                conn,
                f"slot:{self.slot}",
                self.cdc_config.standby_poll_s,
                stopping=lambda: relay.stopping,
                on_standby=self._on_standby,
            ):
                return
            relay.running()
            metrics.CDC_ACTIVE.labels(source=self.name).set(1)
            await self._serve(conn, relay)
        finally:
            reader = self.reader
            if reader is not before and reader is not None and reader.progressed.is_set():
                relay.made_progress()  # this session's reader advanced the slot

    async def _inactive(self) -> None:
        metrics.CDC_ACTIVE.labels(source=self.name).set(0)

    def _on_standby(self, holder: int | None) -> None:
        self.relay.standby()
        self.log.info(
            "standby for slot %s: another reader holds its lock (backend pid %s)",
            self.slot,
            holder,
        )

    async def _serve(self, conn: psycopg.AsyncConnection[Any], relay: RelayLoop) -> None:
        cfg = self.cdc_config
        found = await self._inspect(conn)  # again: we hold the lock now
        if found.problems:
            raise checks.CdcSetupError(self.name, found.problems)
        keys = {t: m.key for t, m in found.tables.items()}
        if cfg.snapshot == "initial_only":
            await self._initial_only(keys, found)
            await relay.stop_event.wait()
            return
        if found.slot is None:
            await self.state.reset_for_new_slot(cfg.tables, initial=cfg.snapshot == "initial")
        created = await checks.ensure_setup(
            conn,
            found,
            slot=self.slot,
            publication=self.publication,
            tables=cfg.tables,
            publish=self.publish_filter,
        )
        if created:
            self.log.info("created replication slot %s", self.slot)
        # Said once the slot exists: from here on every commit is captured.
        self.log.info("reading slot %s (this process holds its lock)", self.slot)
        self.reader = reader = self.make_reader(keys)
        if cfg.create_topics:
            await reader.ensure_topics(self.initial_topics(found))
        await self.on_active(conn, created)
        self._monitor = asyncio.create_task(self._watch(), name=f"postgres_cdc:{self.name}:lag")
        relay.clear_error()
        await reader.run(conn, relay.stop_event)

    async def on_active(self, conn: psycopg.AsyncConnection[Any], created: bool) -> None:
        """Hook for subclasses: runs once the reader is set up, before it streams."""
        return None

    async def _initial_only(self, keys: dict[str, list[str]], found: checks.Inspection) -> None:
        if await self.state.initial_done():
            self.log.info("initial_only snapshot was done before; nothing to do")
            return
        cfg = self.cdc_config
        reader = self.make_reader(keys)
        await reader.ensure_topics(self.initial_topics(found))
        conn = await self._connect("snapshot")
        try:
            rows = await snapshot_all(
                conn,
                cfg.tables,
                capture=reader.changes.capture,
                emitter=reader.emitter,
                chunk_size=cfg.snapshot_chunk_size,
            )
        finally:
            await conn.close()
        await self.state.reset_for_new_slot(cfg.tables, initial=True)
        for task in await self.state.tasks():
            await self.state.save_progress(task.id, None, 0, True)
        self.log.info("initial_only snapshot done: %d rows", rows)

    # ------------------------------------------------------------- monitor
    async def _watch(self) -> None:
        """Slot lag, status row, stall alarm; on its own connection so a stuck reader
        does not stop it."""
        interval = min(2.0, self.cdc_config.stall_timeout_s / 4)
        conn: psycopg.AsyncConnection[Any] | None = None
        label = metrics.CDC_SLOT_LAG_BYTES.labels(source=self.name)
        lag_s = metrics.CDC_LAG_SECONDS.labels(source=self.name)
        stalled = metrics.CDC_STALLED.labels(source=self.name)
        last_commit = metrics.CDC_LAST_COMMIT.labels(source=self.name)
        was_stalled = False
        try:
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = await self._connect("monitor")
                    was_stalled = await self._observe(
                        conn, was_stalled, label, lag_s, stalled, last_commit
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.log.warning("lag monitor: %s", exc)
                    if conn is not None:
                        await conn.close()
                        conn = None
                await asyncio.sleep(interval)
        finally:
            if conn is not None:
                await conn.close()

    async def _observe(
        self,
        conn: psycopg.AsyncConnection[Any],
        was_stalled: bool,
        label: Any,
        lag_s: Any,
        stalled: Any,
        last_commit: Any,
    ) -> bool:
        info = await slots.slot_info(conn, self.slot)
        now = time.monotonic()
        reader = self.reader
        if info is not None:
            self.slot_lag_bytes = info.lag_bytes
            label.set(info.lag_bytes or 0)
            self.detector.observe(now, info.confirmed_flush_lsn, info.lag_bytes)
        if reader is not None:
            lag_s.set(max(0.0, now - reader.caught_up_at))
            if reader.last_commit_at is not None:
                last_commit.set(reader.last_commit_at.timestamp())
            events = reader.events_total - self._status_events
            self._status_events = reader.events_total
            self.activity.events_in.mark(events)
            self.activity.events_out.mark(events)
            await self.state.write_status(
                self.name,
                format_lsn(reader.position),
                reader.last_event_id,
                reader.last_commit_at,
                events,
                self.ident,
            )
        stalled.set(1 if self.detector.stalled else 0)
        if self.detector.stalled and not was_stalled:
            self.log.error("STALLED: slot %s %s", self.slot, self.detector.reason)
        elif was_stalled and not self.detector.stalled:
            self.log.warning("slot %s advances again", self.slot)
        return self.detector.stalled

    async def _stop_monitor(self) -> None:
        task, self._monitor = self._monitor, None
        await cancel(task)

    def readiness(self) -> str:
        if self.detector.stalled and self.relay.state != "failed":
            return f"stalled: {self.detector.reason}"
        return self.relay.readiness()

    def health(self) -> str:
        return self.readiness()

    @property
    def check_name(self) -> str:
        return f"cdc:{self.name}"

    def status(self) -> ComponentStatus:
        reader = self.reader
        relay = self.relay
        details: dict[str, Any] = {
            "slot": self.slot,
            "publication": self.publication,
            "replication": "active" if relay.active else relay.state,
            "slot_lag_bytes": self.slot_lag_bytes,
        }
        if self.detector.stalled:
            details["stalled"] = self.detector.reason
        if reader is not None:
            details["position"] = format_lsn(reader.position)
            details["last_event_id"] = reader.last_event_id
            details["last_commit_at"] = reader.last_commit_at
        st = self.activity.status(
            name=self.name,
            kind=self.kind,
            type=self.type_name,
            state="stalled"
            if self.detector.stalled and relay.state != "failed"
            else relay.component_state(),
            details=details,
        )
        st.last_error = relay.error_info()
        st.recent_errors = relay.recent_errors()
        st.dead_letters = dict(self.dlq.written)
        return st


PLUGIN = Plugin(
    "source",
    "postgres_cdc",
    PostgresCdcEntry,
    PostgresCdcSource.build,
    "row changes of PostgreSQL tables (logical replication) as Debezium-style CloudEvents",
    example="""\
- type: postgres_cdc
  name: shop                      # unique; default prefix of topics, slot and types
  tables: [public.orders, public.customers]
  snapshot: initial               # initial | never | initial_only
  # everything below is optional
  database_url: postgresql://cdc@db:5432/shop   # default: database.url
  slot: eventpipe_shop            # default: eventpipe_<name>
  publication: eventpipe_shop     # default: eventpipe_<name>
  topic: "{prefix}.{schema}.{table}"
  numeric: string                 # string | number
  key_columns: {public.customers: [email]}   # tables without a primary key
  heartbeat_interval_s: 10
""",
)
