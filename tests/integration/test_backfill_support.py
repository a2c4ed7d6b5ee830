"""Helpers the backfill integration tests share (no tests here)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from eventpipe.backfill.options import check_request
from eventpipe.backfill.runner import Backfill, open_context
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import to_kafka
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.service.catalog import CATALOG
from eventpipe.service.config import service_config
from eventpipe.settings import Settings, TopicSpec

HOUR_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def event(i: int, **data: Any) -> CloudEvent:
    return CloudEvent.create(
        "shop.order", "/shop", {"n": i, "total": i * 10, **data}, id=f"e{i}", partitionkey=f"k{i}"
    )


async def produce_at(
    settings: Settings, topic: str, items: Sequence[tuple[int, int, CloudEvent]]
) -> None:
    """(partition, timestamp_ms, event) records, in order, each with its own time."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    await producer.start()
    try:
        futures = []
        for partition, ts, ev in items:
            m = to_kafka(ev)
            futures.append(
                await producer.send(
                    topic,
                    m.value,
                    key=m.key,
                    headers=m.headers,
                    partition=partition,
                    timestamp_ms=ts,
                )
            )
        for f in futures:
            await f
    finally:
        await producer.stop()


async def make_topic(settings: Settings, name: str, partitions: int = 3) -> None:
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=name, partitions=partitions)])


async def topics(settings: Settings) -> set[str]:
    async with TopicAdmin(settings.kafka) as admin:
        return await admin.list_topics()


async def backfill(settings: Settings, **kw: Any) -> dict[str, Any]:
    """Run a backfill in this process (as the CLI does, without the display)."""
    req = check_request(**kw)
    ctx = await open_context(service_config(settings), CATALOG)
    try:
        return await Backfill(ctx, req).run()
    finally:
        await ctx.close()


def iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
