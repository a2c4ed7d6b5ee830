"""A producer for many small concurrent writes: one record batch per partition.

Requests hand their records to :meth:`BatchProducer.send`; records arriving
together (and all that arrive while the previous write of the topic waits for
its acknowledgement) are encoded into one ``BatchBuilder`` per partition and
submitted with ``send_batch``: one future per partition instead of one per
record, whose done-callback answers the requests of that batch directly (fewer
event-loop hops between the broker's ack and the HTTP answer).  Keys are
partitioned like aiokafka's default partitioner (murmur2, as the Java client),
so a key lands where ``Publisher`` would put it; keyless records of one flush go
to one randomly chosen partition (sticky, as Kafka's own producer does), which
keeps batches large.

:meth:`send` returns only after the broker acknowledged (acks from
``kafka.acks``); it raises ``BrokerUnavailableError`` (retriable) or
``RecordTooLargeError`` / ``PermanentError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Sequence
from functools import partial

from aiokafka import AIOKafkaProducer
from aiokafka import errors as ke

from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.errors import BrokerUnavailableError
from eventpipe.kafka.batches import group_by_partition, send_batches, too_large
from eventpipe.kafka.client import producer_kwargs, wrap_kafka_error
from eventpipe.settings import KafkaSettings

# A second flush waits in aiokafka's accumulator while the first is on the wire, so
# it leaves the moment the ack arrives (aiokafka keeps one request in flight per
# broker).
MAX_FLUSHES = 2


class BatchProducer:
    def __init__(self, kafka: KafkaSettings, *, timeout_s: float = 10.0) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self._max_request = kafka.max_request_size
        self._producer: AIOKafkaProducer | None = None
        self._queues: dict[str, _Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

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
        """Finish queued writes (bounded by the timeout), then close.  Idempotent."""
        tasks = [t for q in self._queues.values() for t in q.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout_s)
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.flush(), self.timeout_s)
            await producer.stop()

    def __del__(self) -> None:
        if self._producer is not None:
            warnings.warn("BatchProducer was not stopped", ResourceWarning, stacklevel=1)

    async def send(self, topic: str, messages: Sequence[KafkaMessage]) -> None:
        """Write ``messages`` to ``topic``; returns after every one was acknowledged."""
        q = self._queues.get(topic)
        if q is None:
            q = self._queues[topic] = _Queue()
        loop = self._loop or asyncio.get_running_loop()
        futures = []
        for msg in messages:
            fut: asyncio.Future[None] = loop.create_future()
            q.items.append(msg)
            q.waiters.append(fut)
            futures.append(fut)
        if q.busy < MAX_FLUSHES and not q.scheduled:
            q.scheduled = True
            loop.call_soon(self._start, topic, q)
        if len(futures) == 1:
            await futures[0]
            return
        results = await asyncio.gather(*futures, return_exceptions=True)
        err = next((r for r in results if isinstance(r, BaseException)), None)
        if err is not None:
            raise err

    def _start(self, topic: str, q: _Queue) -> None:
        q.scheduled = False
        if q.busy >= MAX_FLUSHES or not q.items:
            return
        q.busy += 1
        items, waiters = q.items, q.waiters
        q.items, q.waiters = [], []
        task = asyncio.get_running_loop().create_task(self._write(topic, q, items, waiters))
        q.tasks.add(task)
        task.add_done_callback(q.tasks.discard)

    async def _write(
        self,
        topic: str,
        q: _Queue,
        items: list[KafkaMessage],
        waiters: list[asyncio.Future[None]],
    ) -> None:
        """One flush: a record batch per partition.  Each batch's acknowledgement
        answers its requests directly (a done-callback), not via this task."""
        try:
            producer = self._producer
            if producer is None:
                raise BrokerUnavailableError("the webhook producer is not running")
            async with asyncio.timeout(self.timeout_s):
                partitions = await producer.partitions_for(topic)
                groups, oversize = group_by_partition(partitions, items, self._max_request)
                if oversize:
                    _fail([waiters[i] for i in oversize], too_large(topic))
                acks = []
                for p, idx in groups.items():
                    acks.extend(await self._submit(producer, topic, p, items, idx, waiters))
                if acks:
                    await asyncio.wait(acks)
        except TimeoutError:
            _fail(
                waiters,
                BrokerUnavailableError(
                    f"no acknowledgement from the broker within {self.timeout_s:g}s"
                ),
            )
        except ke.KafkaError as exc:
            _fail(waiters, wrap_kafka_error(exc, f"produce to {topic}"))
        except BaseException as exc:
            _fail(waiters, exc if isinstance(exc, Exception) else BrokerUnavailableError("stopped"))
            if not isinstance(exc, Exception):
                raise
        finally:
            q.busy -= 1
            if q.items and not q.scheduled:
                q.scheduled = True
                asyncio.get_running_loop().call_soon(self._start, topic, q)

    @staticmethod
    async def _submit(
        producer: AIOKafkaProducer,
        topic: str,
        partition: int,
        items: list[KafkaMessage],
        idx: list[int],
        waiters: list[asyncio.Future[None]],
    ) -> list[asyncio.Future[object]]:
        records = [(items[i].key, items[i].value, items[i].headers) for i in idx]
        out = []
        for b in await send_batches(producer, topic, partition, records):
            b.ack.add_done_callback(
                partial(_answer, [waiters[i] for i in idx[b.start : b.end]], topic)
            )
            out.append(b.ack)
        return out


class _Queue:
    __slots__ = ("busy", "items", "scheduled", "tasks", "waiters")

    def __init__(self) -> None:
        self.items: list[KafkaMessage] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.busy = 0  # flushes in flight
        self.scheduled = False
        self.tasks: set[asyncio.Task[None]] = set()


def _answer(members: list[asyncio.Future[None]], topic: str, ack: asyncio.Future[object]) -> None:
    """A batch's acknowledgement (or failure) answers its requests."""
    if ack.cancelled():
        _fail(members, BrokerUnavailableError(f"produce to {topic}: cancelled"))
        return
    exc = ack.exception()
    if exc is None:
        for w in members:
            if not w.done():
                w.set_result(None)
        return
    _fail(
        members,
        wrap_kafka_error(exc, f"produce to {topic}")
        if isinstance(exc, ke.KafkaError)
        else BrokerUnavailableError(f"produce to {topic}: {type(exc).__name__}"),
    )


def _fail(waiters: list[asyncio.Future[None]], exc: BaseException) -> None:
    for w in waiters:
        if not w.done():
            w.set_exception(exc)
