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
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer

from .client import RecordTooLargeError

Header = tuple[str, bytes]


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
