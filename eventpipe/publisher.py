"""The Python publishing API.

    async with Publisher(settings) as p:
        await p.publish("orders", CloudEvent.create("order.created", "/shop", {...}))
        await p.publish_batch("orders", events)

Both return only after the broker acknowledged every record (acks=all by
default).  Ids default to UUIDv7 (``CloudEvent.create``).  Records join each
partition's open batch (:mod:`eventpipe.kafka.open_batches`): concurrent calls
share record batches on the wire, and a call waits for at most the request in
flight before its records go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

from eventpipe import metrics, telemetry
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.errors import BrokerUnavailableError, EventpipeError, error_class_name
from eventpipe.kafka.batches import group_by_partition, too_large
from eventpipe.kafka.open_batches import OpenBatchProducer
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
        self._batches = OpenBatchProducer(
            kafka, timeout_s=timeout_s, name="publisher", via="publisher"
        )

    @property
    def trace(self) -> TraceHook | None:
        """The service's trace index (eventpipe.trace): told of every acknowledged
        batch's event ids."""
        return self._batches.trace

    @trace.setter
    def trace(self, hook: TraceHook | None) -> None:
        self._batches.trace = hook

    # ------------------------------------------------------------ lifecycle
    @property
    def started(self) -> bool:
        return self._batches.started

    async def start(self) -> None:
        await self._batches.start()

    async def stop(self) -> None:
        """Finish what is in flight (bounded by the timeout), then close.  Idempotent."""
        await self._batches.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --------------------------------------------------------------- publish
    def _running(self) -> OpenBatchProducer:
        if not self._batches.started:
            raise BrokerUnavailableError(
                "publisher is not started; use `async with Publisher(...)`"
            )
        return self._batches

    async def partitions_for(self, topic: str) -> list[int]:
        """The topic's partitions, as the broker's metadata names them."""
        return await self._running().partitions(topic)

    async def publish(self, topic: str, event: CloudEvent) -> Ack:
        """Send one event and wait for the broker's acknowledgement."""
        try:
            [ack] = await self.publish_messages(
                topic, [to_kafka(event, mode=self.mode)], [event.id]
            )
        except PublishBatchError as exc:
            raise exc.failed[0] from None
        return ack

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
        the keyless ones of a call share one partition) and join each partition's
        open batch, in order; each batch's acknowledgement (its base offset) gives
        every record of it its offset.  A record over ``kafka.max_request_size``
        fails alone; a failed batch fails each of its records.  ``via`` names the
        path in the trace index (eventpipe.trace)."""
        batches = self._running()
        started = time.perf_counter()
        msgs = messages if isinstance(messages, list) else list(messages)
        if not msgs:
            return []  # nothing to send: no metadata round trip for the topic either
        acks: list[Ack | None] = [None] * len(msgs)
        failed: dict[int, BaseException] = {}
        try:
            partitions = await batches.partitions(topic)
            groups, oversize = group_by_partition(partitions, msgs, self.kafka.max_request_size)
            for i in oversize:
                failed[i] = too_large(topic)
            spans = batches.append(topic, groups, msgs, ids, via)
        except EventpipeError as exc:  # no partitions in time; a record no batch takes
            for i in range(len(msgs)):
                failed.setdefault(i, exc)
        else:
            results = await asyncio.gather(*(s.ack for s in spans), return_exceptions=True)
            for span, first in zip(spans, results, strict=True):
                if isinstance(first, BaseException):
                    for i in span.indices:
                        failed[i] = first
                    continue
                p = span.partition
                for d, i in enumerate(span.indices):
                    acks[i] = Ack(topic, p, first + d, ids[i])
        n_acked = len(msgs) - len(failed)
        metrics.EVENTS_PUBLISHED.labels(topic=topic).inc(n_acked)
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        if failed:
            for e in failed.values():
                metrics.ERRORS.labels(error_class=error_class_name(e)).inc()
            raise PublishBatchError({i: a for i, a in enumerate(acks) if a is not None}, failed)
        return acks  # type: ignore[return-value]  # no None left when nothing failed
