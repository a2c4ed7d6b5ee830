"""Whole record batches to one partition (eventpipe.kafka.batches) on the real broker:
every record arrives once, in order, with its key and headers; the acks' base
offsets say how the records were split; a record larger than a batch travels
in a batch of its own."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from eventpipe.connectors.webhook.producer import BatchProducer
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.kafka.batches import send_batches
from eventpipe.kafka.client import RecordTooLargeError
from eventpipe.kafka.open_batches import Span, _Batch
from eventpipe.settings import Settings
from tests.helpers import read_records


@contextlib.asynccontextmanager
async def webhook_producer(settings: Settings, **kafka: Any) -> AsyncIterator[BatchProducer]:
    """A started webhook producer with these ``kafka`` settings changed."""
    producer = BatchProducer(settings.kafka.model_copy(update=kafka))
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def rows(
    n: int, size: int = 40
) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    return [
        (f"k{i}".encode(), f"{i:0{size}d}".encode(), [("n", str(i).encode())]) for i in range(n)
    ]


@pytest.mark.parametrize("split_last", [False, True])
async def test_records_arrive_once_in_order_split_into_batches(
    settings: Settings, topic: str, split_last: bool
) -> None:
    # A long linger: a batch handed over open would sit in the accumulator for it,
    # and the small batch size forces several batches.
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap,
        acks="all",
        linger_ms=60_000,
        max_batch_size=4096,
    )
    await producer.start()
    try:
        records = rows(500)
        sent = await send_batches(producer, topic, 1, records, split_last=split_last)
        metas = [await b.ack for b in sent]
    finally:
        await producer.stop()
    assert len(sent) > 2  # 500 records of ~60 bytes do not fit one 4 KiB batch
    assert [b.start for b in sent] == [0, *(b.end for b in sent[:-1])]
    assert sent[-1].end == 500
    base = metas[0].offset
    assert [m.offset - base for m in metas] == [b.start for b in sent]
    if split_last:
        assert (sent[-1].start, sent[-1].end) == (499, 500)
    got = [r for r in await read_records(settings.kafka.bootstrap, topic, 500) if r.partition == 1]
    assert [r.offset - base for r in got] == list(range(500))
    assert [(r.key, r.value, list(r.headers)) for r in got] == records


async def test_a_record_larger_than_a_batch_travels_alone(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, max_batch_size=1024)
    await producer.start()
    try:
        records = [(b"a", b"small", []), (b"b", b"x" * 4096, []), (b"c", b"small", [])]
        sent = await send_batches(producer, topic, 0, records)
        for b in sent:
            await b.ack
    finally:
        await producer.stop()
    assert [(b.start, b.end) for b in sent] == [(0, 1), (1, 2), (2, 3)]
    got = [r for r in await read_records(settings.kafka.bootstrap, topic, 3) if r.partition == 0]
    assert [(r.key, r.value) for r in got] == [(k, v) for k, v, _ in records]


async def test_webhook_producer_fails_an_oversize_record_alone(
    settings: Settings, topic: str
) -> None:
    # Records of concurrent requests share one flush: the one over
    # kafka.max_request_size fails with RecordTooLargeError, the others are stored.
    small = [KafkaMessage(f"k{i}".encode(), b"v" * 100, [("n", b"1")]) for i in range(3)]
    big = KafkaMessage(b"big", b"x" * 30_000, [])
    async with webhook_producer(settings, max_request_size=20_000) as producer:
        results = await asyncio.gather(
            *(producer.send(topic, [m]) for m in [small[0], big, small[1], small[2]]),
            return_exceptions=True,
        )
    assert [r is None for r in results] == [True, False, True, True]
    assert isinstance(results[1], RecordTooLargeError)
    assert "max_request_size" in str(results[1])
    got = await read_records(settings.kafka.bootstrap, topic, 3)
    assert sorted(r.key for r in got) == [b"k0", b"k1", b"k2"]


async def test_webhook_producer_appends_concurrent_records_to_the_open_batch(
    settings: Settings, topic: str
) -> None:
    # Small batches force several per partition; a second wave is sent while the
    # first is in flight.  Every record arrives once, each key's records in the
    # order they were sent, and records share batches (far fewer than one each).
    keys = [b"alpha", b"beta", b"gamma", b"delta"]

    def msg(i: int) -> KafkaMessage:
        return KafkaMessage(keys[i % 4], f"{i:06d}".encode() * 10, [("n", str(i).encode())])

    batches = 0
    async with webhook_producer(settings, max_batch_size=4096) as producer:
        assert producer._producer is not None
        real_send_batch = producer._producer.send_batch

        async def counting(*args: object, **kwargs: object) -> object:
            nonlocal batches
            batches += 1
            return await real_send_batch(*args, **kwargs)

        producer._producer.send_batch = counting
        first = [asyncio.ensure_future(producer.send(topic, [msg(i)])) for i in range(300)]
        await asyncio.sleep(0)
        second = [asyncio.ensure_future(producer.send(topic, [msg(i)])) for i in range(300, 600)]
        results = await asyncio.gather(*first, *second, return_exceptions=True)
    assert results == [None] * 600
    assert 4 <= batches < 100
    got = await read_records(settings.kafka.bootstrap, topic, 600)
    assert sorted(int(r.value[:6]) for r in got) == list(range(600))
    for key in keys:
        sent = [int(r.value[:6]) for r in sorted(got, key=lambda r: r.offset) if r.key == key]
        assert sent == sorted(sent)
        assert len({r.partition for r in got if r.key == key}) == 1


async def test_webhook_producer_refuses_a_call_with_an_oversize_record_whole(
    settings: Settings, topic: str
) -> None:
    # One request's events are stored together or not at all: the oversize one is
    # found before anything of the call is produced.
    async with webhook_producer(settings, max_request_size=20_000) as producer:
        with pytest.raises(RecordTooLargeError):
            await producer.send(
                topic,
                [
                    KafkaMessage(b"a", b"small", []),
                    KafkaMessage(b"b", b"x" * 30_000, []),
                    KafkaMessage(b"c", b"small", []),
                ],
            )
        await producer.send(topic, [KafkaMessage(b"marker", b"after", [])])
    got = await read_records(settings.kafka.bootstrap, topic, 1)
    assert [(r.key, r.value) for r in got] == [(b"marker", b"after")]


async def test_acknowledged_batches_are_freed_without_the_cyclic_gc(
    settings: Settings, topic: str
) -> None:
    # An acknowledged batch and its spans hold no reference cycle: reference
    # counting frees them, so under load they are no garbage for the cyclic GC
    # to find (issue 18: its collections of them paused the event loop).
    def left() -> int:
        return sum(isinstance(o, Span | _Batch) for o in gc.get_objects())

    async with webhook_producer(settings, max_batch_size=4096) as producer:
        await producer.send(topic, [KafkaMessage(b"warm", b"up", [])])
        gc.collect()
        gc.disable()
        try:
            msgs = [KafkaMessage(f"k{i % 4}".encode(), b"v" * 200, []) for i in range(200)]
            calls = [producer.send(topic, [m], ids=[f"id-{i}"]) for i, m in enumerate(msgs)]
            assert await asyncio.gather(*calls) == [None] * 200
            await asyncio.sleep(0)
            assert left() == 0
        finally:
            gc.enable()
