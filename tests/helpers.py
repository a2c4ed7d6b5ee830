"""Small helpers integration tests share: read back what is on a topic."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import from_kafka


async def read_records(
    bootstrap: str, topic: str, expected: int, timeout: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on ``topic`` from the beginning, waiting until ``expected`` arrived
    (and a short while after, so extra records are seen too)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle: float | None = None
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
            if len(out) >= expected:
                settle = settle or loop.time() + 0.5
                if loop.time() >= settle:
                    break
    finally:
        await consumer.stop()
    return out


async def read_events(
    bootstrap: str, topic: str, expected: int, timeout: float = 20.0
) -> list[CloudEvent]:
    recs = await read_records(bootstrap, topic, expected, timeout)
    return [from_kafka(r.key, r.value, list(r.headers)) for r in recs]
