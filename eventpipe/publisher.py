"""The Python publishing API.

    async with Publisher(settings) as p:
        await p.publish("orders", CloudEvent.create("order.created", "/shop", {...}))
        await p.publish_batch("orders", events)

Both return only after the broker acknowledged every record (acks=all by
default).  Ids default to UUIDv7 (``CloudEvent.create``).  Batches are sent
without awaiting each record, so the producer batches them on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka import errors as ke

from eventpipe import metrics, telemetry
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.errors import BrokerUnavailableError, EventpipeError, error_class_name
from eventpipe.kafka.batches import group_by_partition, send_batches, too_large
from eventpipe.kafka.client import RecordTooLargeError, producer_kwargs, wrap_kafka_error
from eventpipe.settings import KafkaSettings, Settings
from eventpipe.trace_hook import TraceHook

log = logging.getLogger("eventpipe.publisher")
Mode = Literal["binary", "structured"]


class Ack(NamedTuple):
    """Where the broker stored a record."""

    topic: str
    partition: int
    offset: int
    id: str


class PublishBatchError(EventpipeError):
    """Some records of a batch were not acknowledged.  ``acked`` holds the ones that
    were (by batch index), ``failed`` the errors of the rest."""

    def __init__(self, acked: dict[int, Ack], failed: dict[int, BaseException]) -> None:
        self.acked = acked
        self.failed = failed
        self.retriable = all(getattr(e, "retriable", False) for e in failed.values())
        first = next(iter(failed.values()))
        super().__init__(f"{len(failed)} of {len(acked) + len(failed)} record(s) failed: {first}")


class Publisher:
    def __init__(
        self,
        settings: Settings | KafkaSettings | None = None,
        *,
        bootstrap: str | None = None,
        mode: Mode = "binary",
        timeout_s: float = 30.0,
    ) -> None:
        if isinstance(settings, Settings):
            kafka = settings.kafka
            timeout_s = settings.service.publish_timeout_s
        elif isinstance(settings, KafkaSettings):
            kafka = settings
        else:
            kafka = KafkaSettings()
        if bootstrap:
            kafka = kafka.model_copy(update={"bootstrap": bootstrap})
        self.kafka = kafka
        self.mode: Mode = mode
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        # the service's trace index (eventpipe.trace): told of every acknowledged batch
        self.trace: TraceHook | None = None

    # ------------------------------------------------------------ lifecycle
    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**producer_kwargs(self.kafka))
        try:
            await producer.start()
        except ke.KafkaError as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise BrokerUnavailableError(
                f"cannot reach the Kafka broker at {self.kafka.bootstrap} "
                f"({type(exc).__name__}); check kafka.bootstrap / EVENTPIPE_KAFKA_BOOTSTRAP"
            ) from exc
        self._producer = producer

    async def stop(self) -> None:
        """Flush what is in flight, then close.  Idempotent."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.flush(), self.timeout_s)
            await producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __del__(self) -> None:
        if self._producer is not None:
            warnings.warn("Publisher was not stopped", ResourceWarning, stacklevel=1)

    # --------------------------------------------------------------- publish
    def _producer_or_raise(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BrokerUnavailableError(
                "publisher is not started; use `async with Publisher(...)`"
            )
        return self._producer

    @telemetry.produce_span
    async def publish(self, topic: str, event: CloudEvent) -> Ack:
        """Send one event and wait for the broker's acknowledgement."""
        producer = self._producer_or_raise()
        started = time.perf_counter()
        msg = to_kafka(event, mode=self.mode)
        try:
            fut = await producer.send(topic, msg.value, key=msg.key, headers=msg.headers)
            async with asyncio.timeout(self.timeout_s):
                md = await fut
        except ke.KafkaError as exc:
            err: Exception = wrap_kafka_error(exc, f"produce to {topic}")
            metrics.ERRORS.labels(error_class=error_class_name(err)).inc()
            raise err from exc
        except TimeoutError as exc:
            err = BrokerUnavailableError(
                f"no acknowledgement from the broker within {self.timeout_s:.0f}s"
            )
            metrics.ERRORS.labels(error_class=error_class_name(err)).inc()
            raise err from exc
        metrics.EVENTS_PUBLISHED.labels(topic=topic).inc()
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        if self.trace is not None:
            self.trace.produced(topic, md.partition, md.offset, [event.id], None, "publisher")
        return Ack(topic, md.partition, md.offset, event.id)

    async def publish_batch(self, topic: str, events: Sequence[CloudEvent]) -> list[Ack]:
        """Send all events, then wait for every acknowledgement.  Raises
        :class:`PublishBatchError` naming the failed ones if any failed."""
        mode = self.mode
        return await self.publish_messages(
            topic, [to_kafka(e, mode=mode) for e in events], [e.id for e in events]
        )

    @telemetry.produce_span
    async def publish_messages(
        self,
        topic: str,
        messages: Iterable[KafkaMessage],
        ids: Sequence[str],
        *,
        via: str = "publisher",
    ) -> list[Ack]:
        """Lower level: already-encoded records (the HTTP API and CLI use it).

        Records are partitioned as aiokafka's default partitioner would (by key;
        the keyless ones of a call share one partition) and submitted as closed
        record batches per partition (:mod:`eventpipe.kafka.batches`): one future
        per batch instead of one ``send()`` per record.  Then every batch's
        acknowledgement is awaited; a failed batch fails each of its records.
        ``via`` names the path in the trace index (eventpipe.trace)."""
        producer = self._producer_or_raise()
        started = time.perf_counter()
        msgs = messages if isinstance(messages, list) else list(messages)
        if not msgs:
            return []  # nothing to send: no metadata round trip for the topic either
        acks: list[Ack | None] = [None] * len(msgs)
        failed: dict[int, BaseException] = {}
        pending: list[tuple[int, list[int], asyncio.Future[Any]]] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                partitions = await producer.partitions_for(topic)
                groups, oversize = group_by_partition(partitions, msgs, self.kafka.max_request_size)
                for i in oversize:
                    failed[i] = too_large(topic)
                for p, idx in groups.items():
                    records = [(msgs[i].key, msgs[i].value, msgs[i].headers) for i in idx]
                    for b in await send_batches(producer, topic, p, records):
                        pending.append((p, idx[b.start : b.end], b.ack))
                for p, members, ack in pending:
                    try:
                        md = await ack
                    except ke.KafkaError as exc:
                        err = wrap_kafka_error(exc, f"produce to {topic}")
                        for i in members:
                            failed[i] = err
                        continue
                    base = md.offset
                    for d, i in enumerate(members):
                        acks[i] = Ack(topic, p, base + d, ids[i])
                    if self.trace is not None:
                        self.trace.produced(topic, p, base, ids, members, via)
        except TimeoutError:
            rest: BaseException | None = BrokerUnavailableError(
                f"no acknowledgement from the broker within {self.timeout_s:.0f}s"
            )
        except ke.KafkaError as exc:  # metadata: no partitions for the topic in time
            rest = wrap_kafka_error(exc, f"produce to {topic}")
        except RecordTooLargeError as exc:  # a record no batch takes
            rest = exc
        else:
            rest = None
        if rest is not None:
            for i in range(len(msgs)):
                if acks[i] is None and i not in failed:
                    failed[i] = rest
        n_acked = len(msgs) - len(failed)
        metrics.EVENTS_PUBLISHED.labels(topic=topic).inc(n_acked)
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        if failed:
            for e in failed.values():
                metrics.ERRORS.labels(error_class=error_class_name(e)).inc()
            raise PublishBatchError({i: a for i, a in enumerate(acks) if a is not None}, failed)
        return acks  # type: ignore[return-value]  # no None left when nothing failed
