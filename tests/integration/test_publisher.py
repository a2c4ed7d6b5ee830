from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner

from eventpipe.embedded.process import free_port
from eventpipe.envelope import CloudEvent
from eventpipe.errors import BrokerUnavailableError
from eventpipe.kafka.client import RecordTooLargeError
from eventpipe.publisher import PublishBatchError, Publisher
from eventpipe.settings import Settings
from tests.helpers import read_events, read_records


async def test_publish_returns_ack_and_event_is_on_topic(settings: Settings, topic: str) -> None:
    ev = CloudEvent.create("order.created", "/shop", {"order": 1}, partitionkey="cust-7")
    async with Publisher(settings) as p:
        ack = await p.publish(topic, ev)
    assert ack.topic == topic and ack.offset >= 0 and ack.id == ev.id
    assert uuid.UUID(ev.id).version == 7
    [got] = await read_events(settings.kafka.bootstrap, topic, 1)
    assert got.id == ev.id and got.data == {"order": 1}
    assert got.partitionkey == "cust-7"


async def test_batch_is_acknowledged_in_order_and_keys_pick_partitions(
    settings: Settings, topic: str
) -> None:
    events = [CloudEvent.create("t", "/s", {"n": i}, partitionkey=f"k{i % 4}") for i in range(300)]
    async with Publisher(settings) as p:
        acks = await p.publish_batch(topic, events)
    assert [a.id for a in acks] == [e.id for e in events]
    # Same key -> same partition, every time.
    by_key: dict[str, set[int]] = {}
    for e, a in zip(events, acks, strict=True):
        by_key.setdefault(str(e.partitionkey), set()).add(a.partition)
    assert all(len(parts) == 1 for parts in by_key.values())
    got = await read_events(settings.kafka.bootstrap, topic, 300)
    assert sorted(e.data["n"] for e in got) == list(range(300))


async def test_each_ack_names_where_its_record_is_stored(settings: Settings, topic: str) -> None:
    # Records go in closed batches per partition: each Ack's offset is the batch's
    # base offset plus the record's place in it, and keyed records land where
    # aiokafka's default partitioner (and the Java client) would put them.
    events = [
        CloudEvent.create("t", "/s", {"n": i, "pad": "x" * 700}, partitionkey=f"k{i % 7}")
        for i in range(200)
    ]
    events += [CloudEvent.create("t", "/s", {"n": 200 + i}) for i in range(20)]  # keyless
    async with Publisher(settings) as p:
        acks = await p.publish_batch(topic, events)
    records = await read_records(settings.kafka.bootstrap, topic, len(events))
    stored = {(r.partition, r.offset): dict(r.headers)["ce_id"].decode() for r in records}
    assert len(stored) == len(events)
    assert {(a.partition, a.offset): a.id for a in acks} == stored
    partitioner = DefaultPartitioner()
    parts = sorted({a.partition for a in acks} | {0, 1, 2})
    for e, a in zip(events[:200], acks, strict=False):
        assert a.partition == partitioner(str(e.partitionkey).encode(), parts, parts)
    assert len({a.partition for a in acks[200:]}) == 1  # keyless: one sticky partition


async def test_empty_batch_sends_nothing_and_needs_no_topic(settings: Settings) -> None:
    async with Publisher(settings) as p:
        assert await p.publish_batch(f"never-created-{uuid.uuid4().hex[:8]}", []) == []


async def test_oversize_record_fails_alone(settings: Settings, topic: str) -> None:
    kafka = settings.kafka.model_copy(update={"max_request_size": 50_000})
    events = [CloudEvent.create("t", "/s", {"n": i}, partitionkey="k") for i in range(5)]
    events[2] = CloudEvent.create("t", "/s", {"big": "x" * 60_000}, partitionkey="k")
    async with Publisher(kafka) as p:
        with pytest.raises(PublishBatchError) as ei:
            await p.publish_batch(topic, events)
    assert set(ei.value.failed) == {2}
    assert isinstance(ei.value.failed[2], RecordTooLargeError)
    assert sorted(ei.value.acked) == [0, 1, 3, 4]
    got = await read_events(settings.kafka.bootstrap, topic, 4)
    assert sorted(e.data["n"] for e in got) == [0, 1, 3, 4]


async def test_structured_mode(settings: Settings, topic: str) -> None:
    ev = CloudEvent.create("t", "/s", {"a": "ü"})
    async with Publisher(settings, mode="structured") as p:
        await p.publish(topic, ev)
    [got] = await read_events(settings.kafka.bootstrap, topic, 1)
    assert got == ev


async def test_unreachable_broker_is_a_clear_retriable_error(settings: Settings) -> None:
    kafka = settings.kafka.model_copy(
        update={"bootstrap": f"127.0.0.1:{free_port()}", "request_timeout_ms": 1000}
    )
    p = Publisher(kafka)
    with pytest.raises(BrokerUnavailableError, match="cannot reach the Kafka broker") as ei:
        await p.start()
    assert ei.value.retriable
    assert not p.started


async def test_publish_before_start_is_an_error(settings: Settings) -> None:
    with pytest.raises(BrokerUnavailableError, match="not started"):
        await Publisher(settings).publish("x", CloudEvent.create("t", "/s"))


async def test_many_concurrent_single_event_publishes_are_all_acknowledged(
    settings: Settings, topic: str
) -> None:
    # The HTTP publish API calls publish_messages once per request: under load many
    # single-event calls wait on one partition at once.  Each must join the
    # partition's open batch rather than queue a batch of its own in aiokafka's
    # accumulator, whose wait for a free slot uses up its timeout after a few dozen
    # turns and answered KafkaTimeoutError (a 503) within a couple of seconds.
    n = 3000
    events = [CloudEvent.create("t", "/s", {"n": i}, partitionkey="one-key") for i in range(n)]
    async with Publisher(settings) as p:
        results = await asyncio.gather(
            *(p.publish_batch(topic, [e]) for e in events), return_exceptions=True
        )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of {n} failed, first: {errors[0]!r}"
    acks = [r[0] for r in results if not isinstance(r, BaseException)]
    assert len({(a.partition, a.offset) for a in acks}) == n
    records = await read_records(settings.kafka.bootstrap, topic, n)
    stored = {(r.partition, r.offset): dict(r.headers)["ce_id"].decode() for r in records}
    assert {(a.partition, a.offset): a.id for a in acks} == stored
