"""Producing records to one partition as whole record batches.

``producer.send()`` costs a future and a partitioner call per record; callers that
already hold a batch's records (the webhook producer, the pipeline's changelog
writes) build aiokafka ``BatchBuilder`` s themselves and submit them with
``send_batch``.  Each builder is **closed** before it is handed over: aiokafka
sends a closed batch as soon as the partition is free, while an open one waits
out ``linger_ms`` first (``MessageBatch.remaining_linger``) -- pointless for a
batch that is already complete, and an open batch could also take records that
``send()`` appends after it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from .client import RecordTooLargeError

Header = tuple[str, bytes]
RECORD_OVERHEAD = 64  # varints, attributes and offsets of one record, generously


class Record(Protocol):
    """What a record to produce has (``KafkaMessage`` is one)."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> list[Header]: ...


@lru_cache(maxsize=8192)
def key_hash(key: bytes) -> int:
    """murmur2 of a key, as aiokafka's default partitioner and the Java client use.
    Cached: murmur2 is pure Python (0.7 us for a 3-byte key, 3.3 for 22 bytes) and
    keys repeat (customers, orders)."""
    return murmur2(key) & 0x7FFFFFFF


def record_size(msg: Record) -> int:
    """An upper bound of a record's size in a batch."""
    size = RECORD_OVERHEAD + len(msg.key or b"") + len(msg.value or b"")
    for name, value in msg.headers:
        size += len(name) + len(value) + 4
    return size


def too_large(topic: str) -> RecordTooLargeError:
    """The error for a record that :func:`group_by_partition` found over the limit."""
    return RecordTooLargeError(f"produce to {topic}: the record exceeds kafka.max_request_size")


def group_by_partition(
    partitions: Sequence[int], records: Sequence[Record], max_size: int
) -> tuple[dict[int, list[int]], list[int]]:
    """Record indices by partition, and the indices of records over ``max_size``.

    A keyed record goes where aiokafka's default partitioner puts it
    (``sorted(partitions)[murmur2(key) % n]``), so one key keeps one partition
    whichever path produced it; the keyless records of one call share one random
    partition (sticky, as Kafka's own producer does), which keeps batches large."""
    ordered = sorted(partitions)
    n = len(ordered)
    sticky = random.choice(ordered)
    groups: dict[int, list[int]] = {}
    too_large: list[int] = []
    for i, msg in enumerate(records):
        if record_size(msg) > max_size:
            too_large.append(i)
            continue
        key = msg.key
        p = sticky if key is None else ordered[key_hash(key) % n]
        groups.setdefault(p, []).append(i)
    return groups, too_large


class SentBatch(NamedTuple):
    """``records[start:end]`` went in one batch; ``ack`` resolves to its metadata
    (base offset first) once the broker acknowledged it."""

    start: int
    end: int
    ack: asyncio.Future[Any]


async def send_batches(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    records: Sequence[tuple[bytes | None, bytes | None, list[Header]]],
    *,
    split_last: bool = False,
) -> list[SentBatch]:
    """Submit ``(key, value, headers)`` records, in order, in as few batches as fit.

    Headers must be lists (aiokafka's C builder takes nothing else).  Returns once
    every batch is queued (a batch waits for the one before it on the
    same partition); await each ``ack`` for the broker's answer.  ``split_last``
    puts the last record in a batch of its own (see pipelines/changelog.py).  A
    record larger than the producer's ``max_batch_size`` goes alone in a batch
    (aiokafka's builders take any first record; the broker's request limit is
    what refuses it); :class:`RecordTooLargeError` if a builder refuses even that."""
    sent: list[SentBatch] = []
    n = len(records)
    cut = n - 1 if split_last and n > 1 else n
    start = 0
    batch = producer.create_batch()
    for i, (key, value, headers) in enumerate(records):
        if i == cut or batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            if i > start:
                sent.append(await _submit(producer, batch, topic, partition, start, i))
            start, batch = i, producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise RecordTooLargeError(f"produce to {topic}: a record fits no record batch")
    if n > start:
        sent.append(await _submit(producer, batch, topic, partition, start, n))
    return sent


async def _submit(
    producer: AIOKafkaProducer, batch: Any, topic: str, partition: int, start: int, end: int
) -> SentBatch:
    batch.close()
    ack: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
    return SentBatch(start, end, ack)
