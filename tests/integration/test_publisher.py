from __future__ import annotations

import uuid

import pytest

from eventpipe.embedded.process import free_port
from eventpipe.envelope import CloudEvent
from eventpipe.errors import BrokerUnavailableError
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from tests.helpers import read_events


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
