"""A producer for many small concurrent writes: records join the partition's open batch.

Requests hand their records to :meth:`BatchProducer.send`.  Each partition has at
most one *open* record batch (an aiokafka ``BatchBuilder`` already handed to the
accumulator with ``send_batch``): a record is appended to it while it waits
there for the request in flight to be acknowledged, and rides out with it.  The
batch closes when aiokafka drains it onto the wire (or when it is full); the
next record opens a new one.  That is what Kafka's own producer does with
``linger``: under load a record waits for at most the request in flight, not
for a flush queued behind it, and it costs one append, not a future and a
partitioner call inside aiokafka.  One done-callback per batch answers all its
requests directly.  Keys are partitioned like aiokafka's default partitioner
(murmur2, as the Java client), so a key lands where ``Publisher`` would put it;
the keyless records of one call go to one randomly chosen partition (sticky, as
Kafka's own producer does).

:meth:`send` returns only after the broker acknowledged (acks from
``kafka.acks``), or raises ``BrokerUnavailableError`` (retriable, also when no
acknowledgement came within ``timeout_s``), ``RecordTooLargeError`` (before
anything of the call was produced) or ``PermanentError``.  A batch whose
acknowledgement did not come in time is still in aiokafka's hands and may well
be stored: when every batch of a failed call is acknowledged after all, the
call's ``on_late_ack`` runs (the webhook records the delivery ids then).  This
producer is the webhook sources' own: nothing else appends to its batches.  With
tracing on, each record batch is one ``send`` span, a child of the request that
opened it and linked to every request with a record in it (a span per request
would cost as much as the request's own work).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as ke

from eventpipe import telemetry
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.errors import BrokerUnavailableError
from eventpipe.kafka.batches import group_by_partition, too_large
from eventpipe.kafka.client import RecordTooLargeError, producer_kwargs, wrap_kafka_error
from eventpipe.settings import KafkaSettings
from eventpipe.trace_hook import TraceHook

PARTITIONS_TTL_S = 1.0  # how long a topic's partition list is reused without asking


class BatchProducer:
    def __init__(self, kafka: KafkaSettings, *, timeout_s: float = 10.0) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self._max_request = kafka.max_request_size
        self._producer: AIOKafkaProducer | None = None
        self._open: dict[tuple[str, int], _Batch] = {}
        self._unanswered: set[_Batch] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._late: set[asyncio.Task[None]] = set()
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.trace: TraceHook | None = None  # told of each acknowledged batch's ids

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
                f"cannot reach the Kafka broker at {self.kafka.bootstrap} ({type(exc).__name__})"
            ) from exc
        self._producer = producer
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Finish the batches in flight (bounded by the timeout), then close.  Idempotent."""
        waiters = [w for b in self._unanswered for w in b.waiters]
        if waiters or self._tasks:
            await asyncio.wait([*waiters, *self._tasks], timeout=self.timeout_s)
        self._open.clear()
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.flush(), self.timeout_s)
            await producer.stop()
        late, self._late = self._late, set()
        for task in late:  # their batches are settled by now, unless the loop is stopping
            task.cancel()

    def __del__(self) -> None:
        if self._producer is not None:
            warnings.warn("BatchProducer was not stopped", ResourceWarning, stacklevel=1)

    async def send(
        self,
        topic: str,
        messages: Sequence[KafkaMessage],
        *,
        ids: Sequence[str] = (),
        on_late_ack: Callable[[], None] | None = None,
    ) -> None:
        """Write ``messages`` (event ``ids``, for the trace index) to ``topic``;
        returns after every one was acknowledged.  When this raises
        BrokerUnavailableError and the broker acknowledges every message later
        after all, ``on_late_ack()`` is called then."""
        producer = self._producer
        if producer is None:
            raise BrokerUnavailableError("the webhook producer is not running")
        partitions = self._cached_partitions(topic) or await self._fetch_partitions(topic)
        groups, oversize = group_by_partition(partitions, messages, self._max_request)
        if oversize:
            raise too_large(topic)  # before anything of the call is produced
        loop = self._loop or asyncio.get_running_loop()
        futures = []
        batches: list[_Batch] = []
        for p, idx in groups.items():
            batch = self._open.get((topic, p))
            for i in idx:
                msg = messages[i]
                if batch is None or not batch.append(msg):
                    batch = self._open_batch(producer, topic, p, msg)
                if self.trace is not None:
                    batch.ids.append(ids[i] if ids else "")
                if batch.span is not None:
                    batch.span.add_caller()
                fut: asyncio.Future[None] = loop.create_future()
                batch.waiters.append(fut)
                futures.append(fut)
                if not batches or batches[-1] is not batch:
                    batches.append(batch)
        try:
            if len(futures) == 1:
                await futures[0]
                return
            results = await asyncio.gather(*futures, return_exceptions=True)
            err = next((r for r in results if isinstance(r, BaseException)), None)
            if err is not None:
                raise err
        except BrokerUnavailableError:
            if on_late_ack is not None:
                self._watch_late(batches, on_late_ack)
            raise

    def _watch_late(self, batches: list[_Batch], on_late_ack: Callable[[], None]) -> None:
        outcomes = [b.outcome for b in batches]
        if any(o.done() and not o.result() for o in outcomes):
            return  # a batch failed for good: the call is not (wholly) stored
        assert self._loop is not None
        task = self._loop.create_task(_when_all_acked(outcomes, on_late_ack))
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    # ------------------------------------------------------------ partitions
    def _cached_partitions(self, topic: str) -> list[int] | None:
        cached = self._partitions.get(topic)
        if cached is not None and time.monotonic() - cached[0] < PARTITIONS_TTL_S:
            return cached[1]
        return None

    async def _fetch_partitions(self, topic: str) -> list[int]:
        assert self._producer is not None
        try:
            async with asyncio.timeout(self.timeout_s):
                found = await self._producer.partitions_for(topic)
        except TimeoutError:
            raise BrokerUnavailableError(
                f"no metadata for {topic} from the broker within {self.timeout_s:g}s"
            ) from None
        except ke.KafkaError as exc:
            raise wrap_kafka_error(exc, f"produce to {topic}") from exc
        partitions = sorted(found)
        if not partitions:
            raise BrokerUnavailableError(f"produce to {topic}: the topic has no partitions")
        self._partitions[topic] = (time.monotonic(), partitions)
        return partitions

    # --------------------------------------------------------------- batches
    def _open_batch(
        self, producer: AIOKafkaProducer, topic: str, partition: int, first: KafkaMessage
    ) -> _Batch:
        """A new open batch for the partition holding ``first``, handed to aiokafka
        behind the partition's previous batch (order kept)."""
        previous = self._open.get((topic, partition))
        batch = _Batch(producer.create_batch(), telemetry.batch_span(topic, partition))
        if not batch.append(first):
            # group_by_partition() found it fits a request; a builder takes any first record
            raise RecordTooLargeError(f"produce to {topic}: a record fits no record batch")
        self._open[(topic, partition)] = batch
        self._unanswered.add(batch)
        assert self._loop is not None
        task = self._loop.create_task(
            self._submit(producer, topic, partition, batch, previous.queued if previous else None)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return batch

    async def _submit(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        partition: int,
        batch: _Batch,
        after: asyncio.Future[None] | None,
    ) -> None:
        assert self._loop is not None
        deadline = self._loop.call_later(self.timeout_s, self._expire, topic, batch)
        try:
            if after is not None and not after.done():
                await asyncio.wait([after])  # the partition's previous batch goes first
            ack = await producer.send_batch(batch.builder, topic, partition=partition)
        except BaseException as exc:
            deadline.cancel()
            batch.builder.close()
            self._finish(topic, partition, batch)
            batch.fail(_produce_error(exc, topic))
            batch.settle(False, exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            batch.queued.set_result(None)
        ack.add_done_callback(lambda f: self._answered(topic, partition, batch, deadline, f))

    def _answered(
        self,
        topic: str,
        partition: int,
        batch: _Batch,
        deadline: asyncio.TimerHandle,
        ack: asyncio.Future[Any],
    ) -> None:
        deadline.cancel()
        self._finish(topic, partition, batch)
        error: BaseException | None = None
        if ack.cancelled():
            error = BrokerUnavailableError(f"produce to {topic}: cancelled")
            batch.fail(error)
        elif (exc := ack.exception()) is not None:
            error = _produce_error(exc, topic)
            batch.fail(error)
        else:
            batch.succeed()
            if self.trace is not None and batch.ids:
                self.trace.produced(
                    topic, partition, ack.result().offset, batch.ids, None, "webhook"
                )
        batch.settle(error is None, error)

    def _expire(self, topic: str, batch: _Batch) -> None:
        """No acknowledgement within ``timeout_s``: the requests get 503.  The batch
        may still land later: its ``outcome`` tells (see ``on_late_ack``)."""
        batch.builder.close()
        batch.fail(
            BrokerUnavailableError(f"no acknowledgement from the broker within {self.timeout_s:g}s")
        )

    def _finish(self, topic: str, partition: int, batch: _Batch) -> None:
        self._unanswered.discard(batch)
        if self._open.get((topic, partition)) is batch:
            del self._open[(topic, partition)]


class _Batch:
    """One open record batch and the requests waiting for its acknowledgement."""

    __slots__ = ("builder", "ids", "outcome", "queued", "span", "waiters")

    def __init__(self, builder: Any, span: telemetry.BatchSpan | None = None) -> None:
        self.builder = builder
        self.span = span  # tracing on: the batch's ``send`` span
        self.waiters: list[asyncio.Future[None]] = []
        self.ids: list[str] = []  # the records' event ids, when traced
        loop = asyncio.get_running_loop()
        self.queued: asyncio.Future[None] = loop.create_future()
        # True once the broker acknowledged it, False once it failed: also when that
        # comes after the waiters were answered with a timeout
        self.outcome: asyncio.Future[bool] = loop.create_future()

    def append(self, msg: KafkaMessage) -> bool:
        """False once aiokafka drained the batch (built, hence closed) or it is full."""
        return (
            self.builder.append(key=msg.key, value=msg.value, timestamp=None, headers=msg.headers)
            is not None
        )

    def succeed(self) -> None:
        for w in self.waiters:
            if not w.done():
                w.set_result(None)

    def fail(self, exc: BaseException) -> None:
        for w in self.waiters:
            if not w.done():
                w.set_exception(exc)

    def settle(self, acknowledged: bool, error: BaseException | None = None) -> None:
        if not self.outcome.done():
            self.outcome.set_result(acknowledged)
            if self.span is not None:
                self.span.end(len(self.waiters), error)


async def _when_all_acked(outcomes: list[asyncio.Future[bool]], then: Callable[[], None]) -> None:
    await asyncio.wait(outcomes)  # (being cancelled leaves the shared outcomes alone)
    if all(o.result() for o in outcomes):
        then()


def _produce_error(exc: BaseException, topic: str) -> Exception:
    if isinstance(exc, ke.KafkaError):
        return wrap_kafka_error(exc, f"produce to {topic}")
    return BrokerUnavailableError(f"produce to {topic}: {type(exc).__name__}")
