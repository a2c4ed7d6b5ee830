"""What a backfill puts in place of a pipeline's sinks, per mode.

* live: :class:`LiveSink` wraps each real sink.  Before a record's outputs are
  handed to the sink it asks :class:`DeliveryChecks` whether that sink has them
  already, and skips (counts as a duplicate) those it has:

  - the job's own offset mark (postgres / outbox sinks: a batch written just
    before a crash, read again on ``--resume``);
  - for sinks that do not deduplicate by themselves (postgres ``insert`` mode,
    outbox, topic, http): the live pipeline's progress (its sink's mark for
    postgres / outbox, its consumer group's committed offset for the others),
    and the delivery ledger ``eventpipe.backfill_delivered`` keyed by (live
    sink, event source, event id), which earlier backfills wrote.

  postgres sinks in ``upsert`` / ``delete`` mode are idempotent on their key,
  so they are given every record again: that is how a backfill after a fixed
  transform corrects rows.  The ledger row of a postgres / outbox delivery is
  written in the sink's own transaction (:class:`LedgerMixin`, through the
  sink's ``_also_write`` hook), so rows and ledger never disagree; for topic and
  http sinks it is written once the sink returned (at-least-once there, with the
  same CloudEvent ids, which consumers deduplicate on).
* dry_run: :class:`DryRunSink` counts and samples what each sink would get.
* shadow: :class:`ShadowSink` writes every output event to ``<pipeline>.shadow``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as ke
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from eventpipe.connectors.sinks.outbox import OutboxSink
from eventpipe.connectors.sinks.postgres import PostgresSink
from eventpipe.dlq.record import DeadLetter
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.json import to_structured_dict
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.errors import BrokerUnavailableError, PermanentError
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.kafka.client import client_kwargs, start_client, wrap_kafka_error
from eventpipe.kafka.incarnation import Mark, TopicProbe, find_stale
from eventpipe.pipelines.batch import Record
from eventpipe.pipelines.spec import SinkEntry
from eventpipe.plugin import PluginConfig
from eventpipe.publisher import Ack, PublishBatchError, Publisher
from eventpipe.settings import KafkaSettings
from eventpipe.sink import (
    BeforeCommit,
    DeliveryItem,
    PipelineSink,
    SinkUnavailableError,
)
from eventpipe.transforms.steps import ROUTE_EXTENSION

from .topic_reader import stop_consumer

log = logging.getLogger(__name__)
LEDGER_KEY = "backfill_event"  # DeliveryItem.extra: (source, id) of the input event


def ledger_key(item: DeliveryItem) -> tuple[str, str]:
    """The (source, id) of the input event behind ``item`` (set by the backfill)."""
    return cast(tuple[str, str], item.extra[LEDGER_KEY])


H_JOB = "eventpipe.backfill.job"
H_ORIGIN = "eventpipe.backfill.origin"
H_ROUTE = "eventpipe.backfill.route"


# ------------------------------------------------------------------ outcomes
@dataclass
class Outcome:
    """What the sinks did with one batch, by record index."""

    delivered: dict[str, set[int]] = field(default_factory=dict)
    skipped: dict[str, set[int]] = field(default_factory=dict)
    records: dict[int, Record] = field(default_factory=dict)

    def reset(self, records: Sequence[Record]) -> None:
        self.delivered.clear()
        self.skipped.clear()
        self.records = {r.index: r for r in records}


@dataclass
class Samples:
    """The first few outputs per sink and dead letters (dry_run, shadow)."""

    limit: int
    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    outputs_per_sink: dict[str, int] = field(default_factory=dict)

    def full(self, sink: str) -> bool:
        return len(self.outputs.get(sink, ())) >= self.limit

    def count(self, sink: str) -> None:
        self.outputs_per_sink[sink] = self.outputs_per_sink.get(sink, 0) + 1

    def add_output(self, sink: str, doc: dict[str, Any]) -> None:
        self.outputs_per_sink[sink] = self.outputs_per_sink.get(sink, 0) + 1
        got = self.outputs.setdefault(sink, [])
        if len(got) < self.limit:
            got.append(doc)

    def as_dict(self) -> dict[str, Any]:
        return {
            "outputs": self.outputs,
            "dead_letters": self.dead_letters,
            "outputs_per_sink": self.outputs_per_sink,
        }

    def merge(self, other: dict[str, Any]) -> None:
        """Another process's :meth:`as_dict` (a worker's), within the limit."""
        for sink, docs in other.get("outputs", {}).items():
            got = self.outputs.setdefault(sink, [])
            got.extend(docs[: max(0, self.limit - len(got))])
        for sink, n in other.get("outputs_per_sink", {}).items():
            self.outputs_per_sink[sink] = self.outputs_per_sink.get(sink, 0) + int(n)
        letters = other.get("dead_letters", [])
        self.dead_letters.extend(letters[: max(0, self.limit - len(self.dead_letters))])

    def add_letter(self, d: DeadLetter) -> None:
        if len(self.dead_letters) < self.limit:
            self.dead_letters.append(
                {
                    "origin": f"{d.origin.topic}:{d.origin.partition}:{d.origin.offset}",
                    "stage": d.stage,
                    "step": d.step,
                    "exception": d.exception_class,
                    "message": d.exception_message[:500],
                }
            )


def origin_of(it: DeliveryItem) -> str:
    return f"{it.topic}:{it.partition}:{it.offset}"


class CapturedDeadLetters(DeadLetterWriter):
    """Dead letters of a dry run or shadow run: counted by the caller, sampled, not stored."""

    def __init__(self, publisher: Publisher, topic: str, samples: Samples) -> None:
        super().__init__(publisher, topic)
        self.samples = samples

    async def write(self, letters: Sequence[DeadLetter]) -> list[Ack]:
        for d in letters:
            self.samples.add_letter(d)
        return []


class WrapperSink(PipelineSink):
    def __init__(self, name: str, outcome: Outcome) -> None:
        super().__init__(PluginConfig(), name=name)
        self.outcome = outcome

    def _done(self, kind: str, indexes: Sequence[int] | set[int]) -> None:
        target = self.outcome.delivered if kind == "delivered" else self.outcome.skipped
        target.setdefault(self.name, set()).update(indexes)


# ------------------------------------------------------------------- dry run
class DryRunSink(WrapperSink):
    """Counts what a sink would get, makes its rows as it would (a row it could not
    make is a dead letter, as live) and samples the first few."""

    def __init__(self, entry: SinkEntry, outcome: Outcome, samples: Samples) -> None:
        super().__init__(entry.name, outcome)
        self.entry = entry
        self.samples = samples
        cfg = entry.config
        # the sink's own row mapping (not started: it connects to nothing)
        self._sink = PostgresSink(cfg, name=entry.name) if entry.kind == "postgres" else None

    def _target(self, ev: CloudEvent, row: list[Any] | None) -> dict[str, Any]:
        cfg = self.entry.config
        kind = self.entry.kind
        if kind == "topic":
            return {"topic": ev.extensions.get(ROUTE_EXTENSION) or getattr(cfg, "topic", None)}
        if kind == "http":
            return {"url": getattr(cfg, "url", None)}
        if self._sink is None or row is None:
            return {}
        values = [v.obj if isinstance(v, Jsonb) else v for v in row]
        return {"table": cfg.table, "row": dict(zip(self._sink.columns, values, strict=True))}

    async def deliver(
        self, items: Sequence[DeliveryItem], *, before_commit: BeforeCommit | None = None
    ) -> dict[int, BaseException]:
        failed: dict[int, BaseException] = {}
        samples, name = self.samples, self.name
        for it in items:
            rows: list[list[Any]] = []
            if self._sink is not None:
                try:
                    rows = [self._sink._row(it, n) for n in range(len(it.events))]
                except PermanentError as exc:  # the column mapping fails as in the real sink
                    failed[it.index] = exc
                    continue
            for n, ev in enumerate(it.events):
                if samples.full(name):
                    samples.count(name)
                    continue
                target = self._target(ev, rows[n] if rows else None)
                samples.add_output(
                    name, {"origin": origin_of(it), **target, "event": to_structured_dict(ev)}
                )
        self._done("delivered", [it.index for it in items if it.index not in failed and it.events])
        return failed


# -------------------------------------------------------------------- shadow
def strip_route(ev: CloudEvent) -> tuple[CloudEvent, str | None]:
    """The event as the topic sink writes it (without ``routetopic``), and the topic
    a route step chose."""
    routed = ev.extensions.get(ROUTE_EXTENSION)
    if routed is None:
        return ev, None
    plain = CloudEvent(
        id=ev.id,
        source=ev.source,
        type=ev.type,
        data=ev.data,
        subject=ev.subject,
        time=ev.time,
        datacontenttype=ev.datacontenttype,
        dataschema=ev.dataschema,
        extensions={k: v for k, v in ev.extensions.items() if k != ROUTE_EXTENSION},
        specversion=ev.specversion,
        validate=False,
    )
    return plain, str(routed)


class ShadowSink(WrapperSink):
    """Every output event to the shadow topic, tagged with the job and its origin."""

    def __init__(self, publisher: Publisher, topic: str, job_id: str, outcome: Outcome) -> None:
        super().__init__("shadow", outcome)
        self.publisher = publisher
        self.topic = topic
        self.job = job_id.encode()

    async def deliver(
        self, items: Sequence[DeliveryItem], *, before_commit: BeforeCommit | None = None
    ) -> dict[int, BaseException]:
        msgs: list[KafkaMessage] = []
        ids: list[str] = []
        owners: list[int] = []
        for it in items:
            for ev in it.events:
                plain, routed = strip_route(ev)
                m = to_kafka(plain)
                m.headers.append((H_JOB, self.job))
                m.headers.append((H_ORIGIN, origin_of(it).encode()))
                if routed is not None:
                    m.headers.append((H_ROUTE, routed.encode()))
                msgs.append(m)
                ids.append(ev.id)
                owners.append(it.index)
        failed: dict[int, BaseException] = {}
        if msgs:
            try:
                await self.publisher.publish_messages(self.topic, msgs, ids)
            except PublishBatchError as exc:
                if exc.retriable and len(exc.failed) == len(msgs):
                    raise SinkUnavailableError(f"shadow topic {self.topic}: {exc}") from exc
                for i, err in exc.failed.items():
                    failed.setdefault(owners[i], err)
            except BrokerUnavailableError as exc:
                raise SinkUnavailableError(f"shadow topic {self.topic}: {exc}") from exc
        self._done("delivered", [it.index for it in items if it.index not in failed and it.events])
        return failed


# ---------------------------------------------------------------------- live
def is_idempotent(sink: PipelineSink) -> bool:
    """Writing a record twice leaves what writing it once does (keyed upsert / delete)."""
    if not isinstance(sink, PostgresSink) or isinstance(sink, OutboxSink):
        return False
    return getattr(sink, "cfg", None) is not None and sink.cfg.mode in ("upsert", "delete")


class LedgerMixin(PostgresSink):
    """Writes the delivery ledger in the sink's own transaction.  ``ledger_label`` is
    the live sink's label, ``ledger_job`` the job (set after construction)."""

    ledger_label: str = ""
    ledger_job: str = ""

    async def _also_write(
        self,
        conn: psycopg.AsyncConnection[Any],
        items: Sequence[DeliveryItem],
        failed: dict[int, BaseException],
    ) -> None:
        await super()._also_write(conn, items, failed)
        rows = [
            (self.ledger_label, *ledger_key(it), self.ledger_job)
            for it in items
            if it.index not in failed and it.events and LEDGER_KEY in it.extra
        ]
        if rows:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "insert into eventpipe.backfill_delivered (sink, source, id, job_id) "
                    "values (%s, %s, %s, %s) on conflict do nothing",
                    rows,
                )


_LEDGERED: dict[type, type] = {}


def ledgered(cls: type[PipelineSink]) -> type[PipelineSink]:
    """``cls`` with the ledger written in its transaction (postgres and outbox sinks)."""
    if not issubclass(cls, PostgresSink):
        return cls
    sub = _LEDGERED.get(cls)
    if sub is None:
        sub = type(f"Backfill{cls.__name__}", (LedgerMixin, cls), {})
        _LEDGERED[cls] = sub
    return sub


class DeliveryChecks:
    """Which records a sink has already (see the module docstring)."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        kafka: KafkaSettings,
        *,
        job_id: str,
        mark_prefix: str,
        live_group: str,
        from_topics: bool,
        force: bool = False,
    ) -> None:
        self.pool = pool
        self.force = force
        self.kafka = kafka
        self.job_id = job_id
        self.mark_prefix = mark_prefix
        self.live_group = live_group
        self.from_topics = from_topics
        self._group_consumer: AIOKafkaConsumer | None = None
        self._committed: dict[tuple[str, int], tuple[float, int]] = {}
        # (sink, topic, partition, topic id) of a mark -> of the topic there now
        self._judged: dict[tuple[str, str, int, uuid.UUID | None], bool] = {}
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        consumer, self._group_consumer = self._group_consumer, None
        if consumer is not None:
            await stop_consumer(consumer)

    async def _marks(
        self, sink: str, tps: set[tuple[str, int]], *, judge: bool = False
    ) -> dict[tuple[str, int], int]:
        """``sink``'s marks of ``tps``.  ``judge``: leave out those of an earlier
        incarnation of their topic (a live pipeline's marks from before the topic was
        created again say nothing about its records now); judged once per run."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                'select topic, partition, "offset", topic_id from eventpipe.sink_offsets '
                "where sink = %s and (topic, partition) in "
                "(select * from unnest(%s::text[], %s::int[]))",
                (sink, [t for t, _ in tps], [p for _, p in tps]),
            )
            marks = [Mark(t, p, o, i) for t, p, o, i in await cur.fetchall()]
        if not judge:
            return {m.tp: m.offset for m in marks}
        fresh = [m for m in marks if (sink, *m.tp, m.topic_id) not in self._judged]
        if fresh:
            async with TopicAdmin(self.kafka) as admin:
                stale = {s.mark for s in await find_stale(TopicProbe(admin, self.kafka), fresh)}
            for m in fresh:
                self._judged[(sink, *m.tp, m.topic_id)] = m not in stale
                if m in stale:
                    log.warning(
                        "backfill: %s's mark of %s[%d] at %d is of an earlier incarnation "
                        "of the topic; not used to skip records",
                        sink,
                        m.topic,
                        m.partition,
                        m.offset,
                    )
        return {m.tp: m.offset for m in marks if self._judged[(sink, *m.tp, m.topic_id)]}

    async def _live_committed(self, tps: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The live group's committed offsets (cached for a second), as the last offset
        it finished: every record below a committed offset is in all its sinks."""
        now = time.monotonic()
        out: dict[tuple[str, int], int] = {}
        async with self._lock:
            for tp in tps:
                hit = self._committed.get(tp)
                if hit is not None and now - hit[0] < 1.0:
                    out[tp] = hit[1]
                    continue
                if self._group_consumer is None:
                    c = AIOKafkaConsumer(
                        group_id=self.live_group,
                        enable_auto_commit=False,
                        **client_kwargs(self.kafka),
                    )
                    await start_client(c, self.kafka, "read the live group's offsets")
                    self._group_consumer = c
                try:
                    committed = await self._group_consumer.committed(TopicPartition(*tp))
                except ke.KafkaError as exc:
                    raise wrap_kafka_error(exc, "read the live group's offsets") from exc
                last = committed - 1 if committed is not None else -1
                self._committed[tp] = (now, last)
                out[tp] = last
        return out

    async def _ledger(self, sink: str, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "select source, id from eventpipe.backfill_delivered where sink = %s and "
                "(source, id) in (select * from unnest(%s::text[], %s::text[]))",
                (sink, [s for s, _ in keys], [i for _, i in keys]),
            )
            return {(s, i) for s, i in await cur.fetchall()}

    async def have(self, sink: LiveSink, items: Sequence[DeliveryItem]) -> set[int]:
        """Indexes of ``items`` the sink has already."""
        skip: set[int] = set()
        tps = {(it.topic, it.partition) for it in items if it.topic is not None}
        tps_clean = {(t, p if p is not None else 0) for t, p in tps}
        if self.from_topics and tps_clean:
            bounds: list[dict[tuple[str, int], int]] = []
            if sink.marks_offsets:
                bounds.append(await self._marks(f"{self.mark_prefix}/{sink.name}", tps_clean))
            if not sink.idempotent and not self.force:
                if sink.marks_offsets:
                    bounds.append(await self._marks(sink.live_label, tps_clean, judge=True))
                else:
                    bounds.append(await self._live_committed(tps_clean))
            for it in items:
                k = (it.topic or "", it.partition or 0)
                if it.offset is not None and any(it.offset <= b.get(k, -1) for b in bounds):
                    skip.add(it.index)
        if not sink.idempotent and not self.force:
            keys = {
                ledger_key(it): it.index
                for it in items
                if it.index not in skip and LEDGER_KEY in it.extra
            }
            if keys:
                for key in await self._ledger(sink.live_label, set(keys)):
                    skip.add(keys[key])
        return skip

    async def record(self, sink: LiveSink, items: Sequence[DeliveryItem]) -> None:
        rows = [
            (sink.live_label, *ledger_key(it), self.job_id)
            for it in items
            if it.events and LEDGER_KEY in it.extra
        ]
        if not rows:
            return
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(
                "insert into eventpipe.backfill_delivered (sink, source, id, job_id) "
                "values (%s, %s, %s, %s) on conflict do nothing",
                rows,
            )


CHECK_UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
    BrokerUnavailableError,
)


class LiveSink(WrapperSink):
    """A real sink of the pipeline, with the checks above in front of it."""

    def __init__(
        self,
        inner: PipelineSink,
        *,
        pipeline: str,
        checks: DeliveryChecks,
        outcome: Outcome,
        from_topics: bool,
    ) -> None:
        super().__init__(inner.name, outcome)
        self.inner = inner
        self.breaker = inner.breaker
        self.checks = checks
        self.live_label = f"{pipeline}/{inner.name}"
        self.idempotent = is_idempotent(inner)
        self.marks_offsets = isinstance(inner, PostgresSink)
        self.from_topics = from_topics

    async def deliver(
        self, items: Sequence[DeliveryItem], *, before_commit: BeforeCommit | None = None
    ) -> dict[int, BaseException]:
        tagged: list[DeliveryItem] = []
        for it in items:
            rec = self.outcome.records.get(it.index)
            extra = dict(it.extra)
            if rec is not None and rec.event is not None:
                extra[LEDGER_KEY] = (rec.event.source, rec.event.id)
            if self.from_topics:
                tagged.append(
                    DeliveryItem(
                        it.index, it.events, it.topic, it.partition, it.offset, extra, key=it.key
                    )
                )
            else:  # table rows have no offsets: the ledger (or the sink's key) dedupes them
                tagged.append(DeliveryItem(it.index, it.events, extra=extra, key=it.key))
        try:
            skip = await self.checks.have(self, tagged)
        except CHECK_UNAVAILABLE as exc:  # hold the batch (the pipeline backs off)
            raise SinkUnavailableError(f"sink {self.label}: delivery checks: {exc}") from exc
        todo = [it for it in tagged if it.index not in skip]
        failed: dict[int, BaseException] = {}
        if todo:
            failed = await self.inner.deliver(todo, before_commit=before_commit)
        ok = [it for it in todo if it.index not in failed]
        if ok and not self.idempotent and not isinstance(self.inner, LedgerMixin):
            try:
                await self.checks.record(self, ok)
            except CHECK_UNAVAILABLE as exc:  # delivered again on retry: same ids
                raise SinkUnavailableError(f"sink {self.label}: ledger: {exc}") from exc
        # records the steps left without outputs still reach the sink (its offset
        # marks advance) but count for neither
        self._done("skipped", {it.index for it in tagged if it.index in skip and it.events})
        self._done("delivered", [it.index for it in ok if it.events])
        return failed
