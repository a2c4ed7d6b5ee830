"""A producer for many small concurrent writes: records join the partition's open batch.

Callers hand their records to :meth:`OpenBatchProducer.append` (or :meth:`send`).
Each partition has at most one *open* record batch (an aiokafka ``BatchBuilder``
already handed to the accumulator with ``send_batch``): a record is appended to
it while it waits there for the request in flight to be acknowledged, and rides
out with it.  The batch closes when aiokafka drains it onto the wire (or when it
is full); the next record opens a new one.  That is what Kafka's own producer
does with ``linger``: under load a record waits for at most the request in
flight, not for a flush queued behind it, and it costs one append, not a future
and a partitioner call inside aiokafka.  Keys are partitioned like aiokafka's
default partitioner (murmur2, as the Java client), so a key lands where it
always does; the keyless records of one call go to one randomly chosen partition
(sticky, as Kafka's own producer does).

Why not a batch per call (``send_batches``): with many concurrent calls, each
queues a batch of its own in aiokafka's accumulator, which takes one per partition
at a time; its wait for a free slot (``MessageAccumulator.add_batch``, aiokafka
0.14) takes the *total* time waited off its timeout on every turn, so the n-th
waiter gives up after about sqrt(2 * timeout * round trip) -- a couple of
seconds -- with ``KafkaTimeoutError``, and single-event publishes at 1,000/s were
answered 503.  Here at most one batch per partition waits for a slot (each waits
for the one before it to be queued).

Each call's run of records in a batch is a :class:`Span`: one future per span,
resolved with the offset of the span's first record (the batch's base offset plus
its place in the batch), or failed with ``BrokerUnavailableError`` (retriable,
also when no acknowledgement came within ``timeout_s``) or ``PermanentError``.
A batch whose acknowledgement did not come in time is still in aiokafka's hands
and may well be stored: :meth:`send`'s ``on_late_ack`` runs when every batch of a
failed call is acknowledged after all.  Nothing else may append to this
producer's batches (no ``send()`` on its aiokafka producer).

With a trace hook (``trace``, the service's trace index), each acknowledged span
is handed to it with its records' event ids and the path it came by (``via``).
With ``batch_spans`` (the webhook's) and tracing on, each record batch is one
OpenTelemetry ``send`` span, a child of the caller that opened it and linked to
every caller with a record in it (a span per call would cost as much as the
call's own work).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as ke

from eventpipe import telemetry
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.errors import BrokerUnavailableError
from eventpipe.settings import KafkaSettings
from eventpipe.trace_hook import TraceHook

from .batches import group_by_partition, too_large
from .client import RecordTooLargeError, producer_kwargs, start_client, wrap_kafka_error

log = logging.getLogger(__name__)
PARTITIONS_TTL_S = 1.0  # how long a topic's partition list is reused without asking


class Span:
    """Records ``indices`` of a call, appended one after another to one batch of
    ``partition``; ``ack`` resolves to the first one's offset.  ``ids`` are the
    call's event ids (indexed like its messages) for the trace index, ``via`` the
    path they came by."""

    __slots__ = ("ack", "batch", "ids", "indices", "partition", "position", "via")

    def __init__(
        self, batch: _Batch, partition: int, position: int, ids: Sequence[str], via: str
    ) -> None:
        self.batch = batch
        self.partition = partition
        self.position = position  # of the first record in its batch
        self.indices: list[int] = []
        self.ids = ids
        self.via = via
        self.ack: asyncio.Future[int] = batch.loop.create_future()


class OpenBatchProducer:
    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        timeout_s: float = 10.0,
        name: str = "producer",
        via: str = "producer",
        batch_spans: bool = False,
    ) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self.name = name
        self.via = via  # the trace index's name for this path (send's default)
        self.batch_spans = batch_spans
        self.trace: TraceHook | None = None  # told of each acknowledged span's ids
        self._max_request = kafka.max_request_size
        self._producer: AIOKafkaProducer | None = None
        self._open: dict[tuple[str, int], _Batch] = {}
        self._unanswered: set[_Batch] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._late: set[asyncio.Task[None]] = set()
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**producer_kwargs(self.kafka))
        await start_client(producer, self.kafka, "start the producer")
        self._producer = producer
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Finish the batches in flight (bounded by the timeout), then close.  Idempotent."""
        waiters: list[asyncio.Future[Any]] = [s.ack for b in self._unanswered for s in b.spans]
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
            warnings.warn(f"{self.name} was not stopped", ResourceWarning, stacklevel=1)

    def _running(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BrokerUnavailableError(f"the {self.name} is not running")
        return self._producer

    # --------------------------------------------------------------- writing
    async def send(
        self,
        topic: str,
        messages: Sequence[KafkaMessage],
        *,
        ids: Sequence[str] = (),
        on_late_ack: Callable[[], None] | None = None,
    ) -> None:
        """Write ``messages`` (event ``ids``, for the trace index) to ``topic``, all
        or nothing as far as the caller can tell: returns after every one was
        acknowledged; raises
        ``RecordTooLargeError`` (before anything of the call is produced) or the
        first failure.  When this raises BrokerUnavailableError and the broker
        acknowledges every message later after all, ``on_late_ack()`` is called then."""
        self._running()
        partitions = await self.partitions(topic)
        groups, oversize = group_by_partition(partitions, messages, self._max_request)
        if oversize:
            raise too_large(topic)  # before anything of the call is produced
        spans = self.append(topic, groups, messages, ids)
        try:
            if len(spans) == 1:
                await spans[0].ack
                return
            results = await asyncio.gather(*(s.ack for s in spans), return_exceptions=True)
            err = next((r for r in results if isinstance(r, BaseException)), None)
            if err is not None:
                raise err
        except BrokerUnavailableError:
            if on_late_ack is not None:
                self._watch_late({s.batch for s in spans}, on_late_ack)
            raise

    def append(
        self,
        topic: str,
        groups: dict[int, list[int]],
        messages: Sequence[KafkaMessage],
        ids: Sequence[str] = (),
        via: str | None = None,
    ) -> list[Span]:
        """Append ``messages[i]`` for each partition's indices (from
        :func:`~eventpipe.kafka.batches.group_by_partition`, no oversize record among
        them) to the partitions' open batches, in order; one span per batch used.
        ``ids[i]`` is the event id of ``messages[i]`` (for the trace index; may be
        empty when none is kept), ``via`` its path (default: this producer's)."""
        producer = self._running()
        path = via or self.via
        spans: list[Span] = []
        for p, idx in groups.items():
            batch = self._open.get((topic, p))
            span: Span | None = None
            for i in idx:
                msg = messages[i]
                if batch is None or not batch.append(msg):
                    batch = self._open_batch(producer, topic, p, msg)
                    span = None
                if span is None:
                    span = batch.span(p, ids, path)
                    spans.append(span)
                    if batch.otel is not None:
                        batch.otel.add_caller()
                span.indices.append(i)
        return spans

    def _watch_late(self, batches: set[_Batch], on_late_ack: Callable[[], None]) -> None:
        outcomes = [b.outcome for b in batches]
        if any(o.done() and not o.result() for o in outcomes):
            return  # a batch failed for good: the call is not (wholly) stored
        assert self._loop is not None
        task = self._loop.create_task(_when_all_acked(outcomes, on_late_ack))
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    # ------------------------------------------------------------ partitions
    async def partitions(self, topic: str) -> list[int]:
        """The topic's partitions, sorted (reused for PARTITIONS_TTL_S); raises
        BrokerUnavailableError when the broker names none within the timeout."""
        cached = self._partitions.get(topic)
        if cached is not None and time.monotonic() - cached[0] < PARTITIONS_TTL_S:
            return cached[1]
        producer = self._running()
        try:
            async with asyncio.timeout(self.timeout_s):
                found = await producer.partitions_for(topic)
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
        assert self._loop is not None
        otel = telemetry.batch_span(topic, partition) if self.batch_spans else None
        batch = _Batch(producer.create_batch(), self._loop, otel)
        if not batch.append(first):
            # group_by_partition() found it fits a request; a builder takes any first record
            raise RecordTooLargeError(f"produce to {topic}: a record fits no record batch")
        self._open[(topic, partition)] = batch
        self._unanswered.add(batch)
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
            error = _produce_error(exc, topic)
            batch.fail(error)
            batch.settle(False, error)
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
        elif (exc := ack.exception()) is not None:
            error = _produce_error(exc, topic)
        if error is not None:
            batch.fail(error)
        else:
            base = ack.result().offset
            batch.succeed(base)
            if self.trace is not None:
                for s in batch.spans:
                    if s.ids:
                        self.trace.produced(
                            topic, partition, base + s.position, s.ids, s.indices, s.via
                        )
        batch.settle(error is None, error)

    def _expire(self, topic: str, batch: _Batch) -> None:
        """No acknowledgement within ``timeout_s``: the callers learn so.  The batch
        may still land later: its ``outcome`` tells (see ``on_late_ack``)."""
        batch.builder.close()
        batch.fail(
            BrokerUnavailableError(
                f"produce to {topic}: no acknowledgement from the broker within {self.timeout_s:g}s"
            )
        )

    def _finish(self, topic: str, partition: int, batch: _Batch) -> None:
        self._unanswered.discard(batch)
        if self._open.get((topic, partition)) is batch:
            del self._open[(topic, partition)]


class _Batch:
    """One open record batch and the spans of records waiting for its acknowledgement."""

    __slots__ = ("builder", "count", "loop", "otel", "outcome", "queued", "spans")

    def __init__(
        self,
        builder: Any,
        loop: asyncio.AbstractEventLoop,
        otel: telemetry.BatchSpan | None = None,
    ) -> None:
        self.builder = builder
        self.otel = otel  # tracing on: the batch's ``send`` span
        self.count = 0  # records appended
        self.spans: list[Span] = []
        self.loop = loop
        self.queued: asyncio.Future[None] = loop.create_future()
        # True once the broker acknowledged it, False once it failed: also when that
        # comes after the waiters were answered with a timeout
        self.outcome: asyncio.Future[bool] = loop.create_future()

    def append(self, msg: KafkaMessage) -> bool:
        """False once aiokafka drained the batch (built, hence closed) or it is full."""
        if (
            self.builder.append(key=msg.key, value=msg.value, timestamp=None, headers=msg.headers)
            is None
        ):
            return False
        self.count += 1
        return True

    def span(self, partition: int, ids: Sequence[str], via: str) -> Span:
        """A span starting at the record appended last."""
        span = Span(self, partition, self.count - 1, ids, via)
        self.spans.append(span)
        return span

    def succeed(self, base_offset: int) -> None:
        for s in self.spans:
            if not s.ack.done():
                s.ack.set_result(base_offset + s.position)

    def fail(self, exc: BaseException) -> None:
        for s in self.spans:
            if not s.ack.done():
                s.ack.set_exception(exc)

    def settle(self, acknowledged: bool, error: BaseException | None = None) -> None:
        if not self.outcome.done():
            self.outcome.set_result(acknowledged)
            if self.otel is not None:
                self.otel.end(self.count, error)
        # Every span is answered by now: let go of them, so the batch and its spans
        # (which point back at it) are freed by reference counting, not left as
        # cyclic garbage for the GC to find (under load: tens of thousands of
        # objects a young collection, pausing the event loop).
        self.spans = []


async def _when_all_acked(outcomes: list[asyncio.Future[bool]], then: Callable[[], None]) -> None:
    await asyncio.wait(outcomes)  # (being cancelled leaves the shared outcomes alone)
    if all(o.result() for o in outcomes):
        then()


def _produce_error(exc: BaseException, topic: str) -> Exception:
    if isinstance(exc, ke.KafkaError):
        err = wrap_kafka_error(exc, f"produce to {topic}")
    else:
        err = BrokerUnavailableError(f"produce to {topic}: {type(exc).__name__}")
    err.__cause__ = exc
    return err
