"""The Kafka topic source: reads a foreign topic and produces CloudEvents to ours.

An example is ``PLUGIN``'s ``example`` (shown in docs/reference.md#source-kafka with
every key, and loaded by tests/unit/test_reference.py).

Each polled batch is decoded and mapped; records that cannot be decoded or
mapped go to the dead-letter topic (stage ``decode`` / ``source``); the rest are
produced to the target topic.  The source offsets are committed only after every
write of the batch, dead letters included, was acknowledged (ARCHITECTURE.md
section 5); until then the batch is retried with backoff, so a crash or restart
re-sends it with the same ids (at least once).  A record the broker refuses for
good is dead-lettered only when a class says so (errors.is_bad_record: too large);
a per-record failure no class explains (a bug), or a dead letter the broker
refuses for good (never dropped), stops the source with the batch uncommitted.

A read topic deleted and created again while the source runs (its partition
falls back below the offsets read, or ends below them: Tansu leaves the
consumer waiting past the new topic's end) is told apart from a redelivery as
pipelines do it (:mod:`eventpipe.kafka.incarnation`).  ``read.on_topic_reset``
(default ``kafka.on_topic_reset``) decides: ``fail`` stops the source with
:class:`~eventpipe.kafka.incarnation.TopicResetError`; ``reset`` reads the new
topic from its beginning, and its default ids (``offset``) get the new topic's
id appended so they do not repeat the old topic's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import decimal
import logging
import random
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka import errors as ke
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from psycopg_pool import AsyncConnectionPool
from pydantic import Field, field_validator, model_validator

from eventpipe import metrics, telemetry
from eventpipe.connectors.webhook.config import check_programs
from eventpipe.connectors.webhook.mapping import FieldProgram, MappingError
from eventpipe.context import Context
from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.errors import (
    BrokerUnavailableError,
    ConfigError,
    InvalidEventError,
    PermanentError,
    classify,
    error_class_name,
    is_bad_record,
    is_retriable,
)
from eventpipe.kafka.admin import TopicAdmin, prepare_source_topics
from eventpipe.kafka.client import client_kwargs, wrap_kafka_error
from eventpipe.kafka.incarnation import (
    Mark,
    TopicProbe,
    TopicResetError,
    apply_policy,
    ends_below,
    find_stale,
)
from eventpipe.loop import cancel
from eventpipe.plugin import Plugin, PluginConfig, Source, SourceConfig
from eventpipe.preflight import Problem, Reach, topic_problems
from eventpipe.publisher import PublishBatchError
from eventpipe.schema_registry.client import SchemaRegistryClient
from eventpipe.schema_registry.registry import SchemaRegistry
from eventpipe.schema_registry.schemas import AvroSchema, JsonSchema, ParsedSchema
from eventpipe.schema_registry.wire import WireFormatError, avro_decode, json_decode, unframe
from eventpipe.settings import KafkaSettings
from eventpipe.status import Activity, ComponentStatus, State
from eventpipe.topics import TopicName
from eventpipe.transforms.jq_engine import EngineName

log = logging.getLogger("eventpipe.kafka_source")
_ID = re.compile(r"^(offset|key|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$")


class ReadConfig(PluginConfig):
    """The foreign topics and how they are read."""

    topics: list[TopicName] = Field(min_length=1, description="the topics read")
    bootstrap: str | None = Field(
        None, description="brokers of another cluster, host:port[,...]; default: kafka.bootstrap"
    )
    group_id: str | None = Field(
        None, description="consumer group; default eventpipe.source.<name>"
    )
    start: Literal["earliest", "latest"] = Field(
        "earliest", description="where a group without committed offsets starts"
    )
    session_timeout_ms: int = Field(
        10_000, ge=1000, le=300_000, description="how soon a dead reader's partitions move"
    )
    on_topic_reset: Literal["fail", "reset"] | None = Field(
        None,
        description="a read topic deleted and created again while the source runs: fail "
        "stops the source with an error naming it, reset reads the new topic from its "
        "beginning (its default ids end in @<topic id>); default: kafka.on_topic_reset",
    )


class RecordMapping(PluginConfig):
    """CloudEvent attributes; type, subject and partitionkey are jq expressions over
    ``{key, value, headers, topic, partition, offset, timestamp}``."""

    id: str = Field("offset", description="offset | key | header:<name>")
    source: str | None = Field(None, description="default /kafka/<topic>")
    type: str | None = Field(None, description='default "kafka." + .topic')
    subject: str | None = Field(None, description="jq; default: no subject")
    partitionkey: str | None = Field(None, description="default: the record key")
    engine: EngineName = Field("jaq", description="jq engine: jaq (jaq-rs) or jq (libjq)")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("use offset, key, or header:<name>")
        return v

    @model_validator(mode="after")
    def _programs(self) -> RecordMapping:
        check_programs(
            {f: getattr(self, f) for f in ("type", "subject", "partitionkey")}, self.engine
        )
        return self


class KafkaSourceConfig(PluginConfig):
    topic: TopicName = Field(description="where the CloudEvents go")
    read: ReadConfig = Field(description="what is read, from which cluster")
    format: Literal["json", "avro", "bytes"] = Field(
        "json",
        description="the records' values: JSON, Avro in the Confluent wire format (schema from "
        "the registry), or bytes kept as they are",
    )
    registry_url: str | None = Field(
        None, description="avro: the schema registry; default: the service's own"
    )
    event: RecordMapping = Field(
        default_factory=RecordMapping, description="CloudEvent attributes from each record"
    )
    dead_letter_topic: TopicName | None = Field(
        None, description="records that cannot be decoded or mapped; default <topic>.dlq"
    )
    batch_size: int = Field(500, ge=1, le=10_000, description="most records read per poll")


class KafkaSourceEntry(KafkaSourceConfig, SourceConfig):
    """A ``sources:`` entry of type kafka."""

    type: Literal["kafka"] = Field(description="picks this source")


class DecodeError(PermanentError):
    """The record's bytes are not in the configured format (dead letter, stage decode)."""


class DeadLetterRefusedError(PermanentError):
    """The broker refused a record's dead letter for good: the source stops without
    committing the record (a dead letter is never dropped)."""


class Schemas(Protocol):
    async def get_parsed(self, schema_id: int) -> ParsedSchema: ...


class LocalSchemas:
    """The service's own registry, read from Postgres in process."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._registry = SchemaRegistry(pool)
        self._pool = pool
        self._cache: dict[int, ParsedSchema] = {}

    async def get_parsed(self, schema_id: int) -> ParsedSchema:
        parsed = self._cache.get(schema_id)
        if parsed is None:
            schema = await self._registry.schema_by_id(schema_id)
            async with self._pool.connection() as conn:
                parsed = await self._registry.parse(conn, schema)
            self._cache[schema_id] = parsed
        return parsed


def _jsonable(value: Any) -> Any:
    """Avro values orjson cannot write (decimal, bytes) as JSON ones."""

    def default(v: Any) -> Any:
        if isinstance(v, decimal.Decimal):
            return str(v)
        if isinstance(v, bytes | bytearray):
            return base64.b64encode(v).decode("ascii")
        raise TypeError(type(v).__name__)

    try:
        orjson.dumps(value)
        return value
    except TypeError:
        return orjson.loads(orjson.dumps(value, default=default))


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class KafkaTopicSource(Source):
    type_name = "kafka"
    Config = KafkaSourceConfig

    def __init__(self, config: KafkaSourceConfig, *, name: str, ctx: Context) -> None:
        super().__init__(config, name=name)
        self.cfg = config
        self.ctx = ctx
        self.dlq_topic = config.dead_letter_topic or f"{config.topic}.dlq"
        self.dlq = DeadLetterWriter(ctx.publisher, self.dlq_topic, pool=ctx.pool)
        ev = config.event
        fields = {"type": ev.type or '"kafka." + .topic'}
        for f in ("subject", "partitionkey"):
            if getattr(ev, f) is not None:
                fields[f] = getattr(ev, f)
        self.fields = FieldProgram(fields, ev.engine, where="event.")
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._schemas: Schemas | None = None
        self._client: SchemaRegistryClient | None = None
        self._committed: dict[str, int] = {}
        # which incarnation of each read topic is read (eventpipe.kafka.incarnation)
        self._probe: TopicProbe | None = None
        self._own_admin: TopicAdmin | None = None  # read.bootstrap: another cluster's
        self._ids: dict[str, uuid.UUID | None] = {}  # topic ids when reading began
        self._next: dict[TopicPartition, int] = {}  # partition -> next offset to read
        self._asked: dict[TopicPartition, int] = {}  # partition -> an end below it, asked
        self._renewed: dict[str, str] = {}  # topic created again -> what its ids end in
        self.activity = Activity()
        self._produced = metrics.SOURCE_RECORDS.labels(source=name, outcome="produced")
        self._dead = metrics.SOURCE_RECORDS.labels(source=name, outcome="dead_lettered")
        self._latency = metrics.INGEST_SECONDS.labels(source=name)

    @classmethod
    def build(cls, config: KafkaSourceConfig, name: str, ctx: Context) -> KafkaTopicSource:
        return cls(config, name=name, ctx=ctx)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is not None:
            return
        await self._check_topics()
        if self.cfg.format == "avro":
            if self.cfg.registry_url:
                self._client = SchemaRegistryClient(self.cfg.registry_url)
                self._schemas = self._client
            elif self.ctx.pool is not None:
                self._schemas = LocalSchemas(self.ctx.pool)
            else:
                raise ConfigError([(f"sources.{self.name}.registry_url", "needed for avro")])
        kafka = self.ctx.settings.kafka
        if self.cfg.read.bootstrap:
            kafka = kafka.model_copy(update={"bootstrap": self.cfg.read.bootstrap})
        consumer = AIOKafkaConsumer(
            *self.cfg.read.topics,
            **client_kwargs(kafka),
            group_id=self.cfg.read.group_id or f"eventpipe.source.{self.name}",
            enable_auto_commit=False,
            auto_offset_reset=self.cfg.read.start,
            session_timeout_ms=self.cfg.read.session_timeout_ms,
            heartbeat_interval_ms=max(100, min(3000, self.cfg.read.session_timeout_ms // 3)),
        )
        try:
            await consumer.start()
        except ke.KafkaError as exc:
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self._close_client()
            raise wrap_kafka_error(exc, f"source {self.name}: consumer start") from exc
        self._consumer = consumer
        await self._open_probe(kafka)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _open_probe(self, kafka: KafkaSettings) -> None:
        admin = self.ctx.admin
        if self.cfg.read.bootstrap:
            admin = self._own_admin = TopicAdmin(kafka)
        self._probe = TopicProbe(admin, kafka)
        try:
            self._ids = await self._probe.ids(self.cfg.read.topics)
        except Exception as exc:  # unknown: a re-creation is then told by the end offsets
            log.warning("source %s: cannot read the topics' ids (%s)", self.name, exc)
            self._ids = {}

    async def _check_topics(self) -> None:
        await prepare_source_topics(
            self.ctx.admin,
            self.ctx.settings.kafka,
            topic=self.cfg.topic,
            dlq_topic=self.dlq_topic,
            where=f"sources.{self.name}",
        )

    async def stop(self) -> None:
        """Stop reading; a batch not yet acknowledged is not committed (re-read later)."""
        task, self._task = self._task, None
        await cancel(task)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        admin, self._own_admin = self._own_admin, None
        if admin is not None:
            await admin.stop()
        await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def position(self) -> Any:
        return dict(self._committed)

    def status(self) -> ComponentStatus:
        consumer, task = self._consumer, self._task
        state: State = "stopped"
        lag: dict[str, int] = {}
        if task is not None and task.done():
            state = "failed"
        elif consumer is not None:
            assigned = consumer.assignment()
            state = "running" if assigned else "waiting"
            for tp in assigned:
                hw = consumer.highwater(tp)
                done = self._committed.get(f"{tp.topic}/{tp.partition}")
                if hw is not None and done is not None:
                    lag[f"{tp.topic}[{tp.partition}]"] = max(0, hw - done)
        st = self.activity.status(
            name=self.name,
            kind=self.kind,
            type=self.type_name,
            state=state,
            lag=lag,
            details={"topic": self.cfg.topic, "reads": list(self.cfg.read.topics)},
        )
        st.dead_letters = dict(self.dlq.written)
        return st

    # ---------------------------------------------------------------- loop
    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=500, max_records=self.cfg.batch_size)
            except ke.KafkaError as exc:
                self.activity.failed(exc)
                log.warning("source %s: poll failed (%s); retrying", self.name, exc)
                await asyncio.sleep(1.0)
                continue
            try:
                if await self._recreated(consumer, batch):
                    continue  # the batch was of a topic read again from its beginning
            except TopicResetError as exc:
                self.activity.failed(exc)
                self.report_failure(exc)
                return
            except Exception as exc:  # not known which: read the batch again, ask again
                self.activity.failed(exc)
                log.warning(
                    "source %s: cannot tell whether a topic was created again (%s)", self.name, exc
                )
                self._asked.clear()
                for tp, recs in batch.items():
                    consumer.seek(tp, recs[0].offset)
                await asyncio.sleep(1.0)
                continue
            if not batch:
                continue
            records = [r for recs in batch.values() for r in recs]
            try:
                await self.deliver(records)
            except Exception as exc:
                self.activity.failed(exc)
                if isinstance(exc, DeadLetterRefusedError) or classify(exc) is None:
                    self.report_failure(exc)  # nothing of the batch is committed
                    return
                log.exception("source %s: delivering a batch failed; reading it again", self.name)
                for tp, recs in batch.items():
                    consumer.seek(tp, recs[0].offset)
                await asyncio.sleep(1.0)
                continue
            offsets = {tp: OffsetAndMetadata(recs[-1].offset + 1, "") for tp, recs in batch.items()}
            for tp, om in offsets.items():
                self._next[tp] = om.offset
            try:
                await consumer.commit(offsets)
            except ke.KafkaError as exc:  # a rebalance: the new owner re-reads (same ids)
                log.warning("source %s: commit failed (%s)", self.name, type(exc).__name__)
                continue
            for tp, om in offsets.items():
                self._committed[f"{tp.topic}/{tp.partition}"] = om.offset

    async def _recreated(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> bool:
        """Did a read topic get deleted and created again?  Asked when a partition
        falls back below the offsets read (Apache Kafka answers OffsetOutOfRange and
        the position is reset) or ends below them (Tansu).  A redelivery of the same
        topic goes on as usual (same ids).  A new topic: ``fail`` raises
        TopicResetError; ``reset`` seeks it to its beginning, drops ``batch`` (the
        rest of it is read again) and returns True."""
        assigned = consumer.assignment()
        nexts = {tp: n for tp, n in self._next.items() if tp in assigned}
        behind = ends_below(consumer.highwater, nexts, self._asked)
        for tp, recs in batch.items():
            nxt = self._next.get(tp)
            if nxt is not None and recs[0].offset < nxt:
                behind[tp] = min(recs[0].offset, behind.get(tp, nxt))
        if not behind or self._probe is None:
            return False
        stale = await find_stale(
            self._probe,
            [
                Mark(tp.topic, tp.partition, self._next[tp] - 1, self._ids.get(tp.topic))
                for tp in sorted(behind)
            ],
        )
        if not stale:
            return False
        read = self.cfg.read
        apply_policy(
            stale,
            read.on_topic_reset or self.ctx.settings.kafka.on_topic_reset,
            owner=self.label,
            option=f"sources.{self.name}.read.on_topic_reset: reset (or kafka.on_topic_reset "
            "/ EVENTPIPE_KAFKA_ON_TOPIC_RESET=reset)",
        )
        for tp, recs in batch.items():
            consumer.seek(tp, recs[0].offset)
        tags = {s.mark.topic: str(s.topic_id or uuid.uuid4()) for s in stale}
        for s in stale:
            tp = TopicPartition(*s.mark.tp)
            await consumer.seek_to_beginning(tp)
            self._next.pop(tp, None)
            self._asked.pop(tp, None)
            self._ids[tp.topic] = s.topic_id
            self._renewed[tp.topic] = tags[tp.topic]
        return True

    async def deliver(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Produce one polled batch (and its dead letters); returns only when all were
        acknowledged, retrying retriable failures with backoff.  A record's W3C
        ``traceparent`` header becomes its event's; with tracing on, the others take
        the batch span's."""
        contexts = [telemetry.from_record_headers(r.headers) for r in records]
        with telemetry.consumer_span(f"process {self.name}", contexts, self._span_attributes()):
            await self._deliver(records, contexts)

    def _span_attributes(self) -> dict[str, Any]:
        read = self.cfg.read
        return {
            "messaging.system": "kafka",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": ",".join(read.topics),
            "messaging.consumer.group.name": read.group_id or f"eventpipe.source.{self.name}",
            "eventpipe.source": self.name,
        }

    async def _deliver(
        self,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        contexts: list[telemetry.TraceContext | None],
    ) -> None:
        started = asyncio.get_running_loop().time()
        self.activity.events_in.mark(len(records))
        pending: list[tuple[ConsumerRecord[bytes, bytes], KafkaMessage, str]] = []
        letters: list[DeadLetter] = []
        batch_context = telemetry.current()
        for rec, context in zip(records, contexts, strict=True):
            try:
                event = await self._event_retrying(rec)
                telemetry.stamp(event, context or batch_context)
                pending.append((rec, to_kafka(event), event.id))
            except (DecodeError, MappingError, InvalidEventError) as exc:
                stage = "decode" if isinstance(exc, DecodeError) else "source"
                letters.append(self._letter(rec, exc, stage))
        produced = len(pending)
        delay = 0.2
        while pending or letters:
            try:
                if pending:
                    msgs = [m for _, m, _ in pending]
                    await self.ctx.publisher.publish_messages(
                        self.cfg.topic, msgs, [i for _, _, i in pending]
                    )
                    pending = []
                if letters:
                    await self.dlq.write(letters)
                    letters = []
                break
            except PublishBatchError as exc:
                refused = exc
            except BrokerUnavailableError as exc:
                self.activity.failed(exc)
                await self._backoff(exc, delay)
                delay = min(delay * 2, 10.0)
                continue
            # Out of the except clause: an error raised here does not get the batch's
            # error as its context (classify() would read that class instead).
            if pending:
                retry = []
                for i, err in sorted(refused.failed.items()):
                    if is_retriable(err):
                        retry.append(pending[i])
                    elif is_bad_record(err):  # refused for good (too large): a dead letter
                        produced -= 1
                        letters.append(self._letter(pending[i][0], err, "source"))
                    else:  # no class explains it: a bug, which stops the source
                        raise self._unexplained(pending[i][0], err)
                pending = retry
            else:
                for i, err in sorted(refused.failed.items()):
                    if not is_retriable(err):  # never dropped: the source stops
                        raise self._letter_refused(letters[i], err) from err
                letters = [letters[i] for i in sorted(refused.failed)]
            if pending or letters:
                await self._backoff(refused, delay)
                delay = min(delay * 2, 10.0)
        self._produced.inc(produced)
        self.activity.events_out.mark(produced)
        self._dead.inc(len(records) - produced)
        self._latency.observe(asyncio.get_running_loop().time() - started)

    def _unexplained(self, rec: ConsumerRecord[bytes, bytes], err: BaseException) -> BaseException:
        """``err`` (no class explains it) for ``rec``, logged: it stops the source."""
        log.error(
            "source %s: producing %s/%s@%s to %s failed with an error no class explains "
            "(%s: %s); it is not dead-lettered and the source stops without committing "
            "it: fix the cause and restart (the record is read again)",
            self.name,
            rec.topic,
            rec.partition,
            rec.offset,
            self.cfg.topic,
            error_class_name(err),
            err,
        )
        return err

    def _letter_refused(self, letter: DeadLetter, err: BaseException) -> DeadLetterRefusedError:
        where = f"{letter.origin.topic}/{letter.origin.partition}@{letter.origin.offset}"
        msg = (
            f"source {self.name}: the dead letter for {where} was refused by {self.dlq_topic} "
            f"for good ({error_class_name(err)}: {err}); the source stops without committing "
            f"the record: let it write to {self.dlq_topic} (the topic exists, the principal "
            "may write to it, the topic's max.message.bytes takes the record) and restart "
            "(the record is read again)"
        )
        log.error("%s", msg)
        return DeadLetterRefusedError(msg)

    async def _event_retrying(self, rec: ConsumerRecord[bytes, bytes]) -> CloudEvent:
        delay = 0.2
        while True:
            try:
                return await self.to_event(rec)
            except BrokerUnavailableError as exc:  # the schema registry is unreachable
                await self._backoff(exc, delay)
                delay = min(delay * 2, 10.0)

    async def _backoff(self, exc: BaseException, delay: float) -> None:
        log.warning("source %s: %s; retrying in %.1fs", self.name, type(exc).__name__, delay)
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))

    # ------------------------------------------------------------- mapping
    async def to_event(self, rec: ConsumerRecord[bytes, bytes]) -> CloudEvent:
        value = await self.decode(rec.value)
        headers = {k: _text(v) for k, v in rec.headers or ()}
        key_text = _text(rec.key)
        attrs = self.fields.run(
            {
                "key": key_text,
                "value": value,
                "headers": headers,
                "topic": rec.topic,
                "partition": rec.partition,
                "offset": rec.offset,
                "timestamp": rec.timestamp,
            }
        )
        event_type = attrs.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise MappingError("type", "the type expression must give a non-empty string")
        ext: dict[str, str | int | bool] = {
            "kafkatopic": rec.topic,
            "kafkapartition": rec.partition,
            "kafkaoffset": str(rec.offset),
        }
        pk = attrs.get("partitionkey") if self.cfg.event.partitionkey is not None else key_text
        if pk is not None:
            ext["partitionkey"] = pk if isinstance(pk, str) else orjson.dumps(pk).decode()
        subject = attrs.get("subject")
        bytes_format = self.cfg.format == "bytes"
        return CloudEvent(
            id=self._id(rec, headers, key_text),
            source=self.cfg.event.source or f"/kafka/{rec.topic}",
            type=event_type,
            subject=None if subject is None else str(subject),
            time=datetime.fromtimestamp(rec.timestamp / 1000, UTC),
            datacontenttype="application/octet-stream" if bytes_format else "application/json",
            data=value,
            extensions=ext,
        )

    def _id(
        self, rec: ConsumerRecord[bytes, bytes], headers: dict[str, str | None], key: str | None
    ) -> str:
        how = self.cfg.event.id
        if how == "offset":
            renewed = self._renewed.get(rec.topic)
            if renewed is None:
                return f"{rec.topic}-{rec.partition}-{rec.offset}"
            return f"{rec.topic}-{rec.partition}-{rec.offset}@{renewed}"
        found = key if how == "key" else headers.get(how.partition(":")[2])
        if not found:
            raise MappingError("id", f"the record has no {how} to take the id from")
        return found

    async def decode(self, raw: bytes | None) -> Any:
        if raw is None:
            return None
        fmt = self.cfg.format
        if fmt == "bytes":
            return bytes(raw)
        if fmt == "json":
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise DecodeError(f"the value is not JSON: {exc.msg}") from exc
        assert self._schemas is not None
        try:
            schema_id, payload = unframe(raw)
        except WireFormatError as exc:
            raise DecodeError(str(exc)) from exc
        try:
            writer = await self._schemas.get_parsed(schema_id)
        except Exception as exc:
            if is_retriable(exc):
                raise BrokerUnavailableError(f"schema registry unavailable: {exc}") from exc
            raise DecodeError(f"schema id {schema_id} is unknown: {exc}") from exc
        try:
            if isinstance(writer, AvroSchema):
                return _jsonable(avro_decode(payload, writer))
            if isinstance(writer, JsonSchema):
                return json_decode(payload)
        except WireFormatError as exc:
            raise DecodeError(str(exc)) from exc
        raise DecodeError(f"schema id {schema_id} is {type(writer).__name__}, not Avro or JSON")

    def _letter(
        self, rec: ConsumerRecord[bytes, bytes], exc: BaseException, stage: str
    ) -> DeadLetter:
        return DeadLetter.from_exception(
            exc,
            key=rec.key,
            value=rec.value,
            headers=list(rec.headers or ()),
            pipeline=self.name,
            stage=stage,
            origin=Origin(rec.topic, rec.partition, rec.offset, rec.timestamp),
        )


async def check_kafka_source(cfg: KafkaSourceConfig, reach: Reach) -> list[Problem]:
    """Start-time check: the target topic exists (or will be created)."""
    return await topic_problems(reach, [("topic", cfg.topic)])


PLUGIN = Plugin(
    "source",
    "kafka",
    KafkaSourceEntry,
    KafkaTopicSource.build,
    "records of a foreign Kafka topic (JSON, Avro, bytes) mapped to CloudEvents on ours",
    check=check_kafka_source,
    example="""\
- type: kafka
  name: legacy-orders
  topic: orders.events                 # where the CloudEvents go
  read:
    topics: [legacy.orders]
    bootstrap: other-cluster:9092      # default: kafka.bootstrap
    group_id: eventpipe.legacy-orders  # default: eventpipe.source.<name>
    start: earliest                    # where a new group starts
    on_topic_reset: fail               # topic re-created while read: fail | reset
  format: avro                         # json | avro (Confluent wire format) | bytes
  registry_url: http://registry:8081   # avro; default: the service's own registry
  event:
    id: header:event-id                # offset (default) | key | header:<name>
    type: '"legacy.order." + .value.status'   # jq over {key, value, headers, topic, ...}
    subject: .value.order_id
""",
)
