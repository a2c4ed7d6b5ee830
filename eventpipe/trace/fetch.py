"""Reading single records back from Kafka by (topic, partition, offset).

The trace index names each candidate record's exact offset, so checking one costs
a seek and one fetch (the broker answers with the record batch holding it), not a
scan.  All partitions are read at once; a partition that returns nothing for
``idle_s`` (the offset is gone: retention, or a topic created again with fewer
records) gives ``None`` for what was still wanted there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as ke

from eventpipe.kafka.client import client_kwargs, start_client
from eventpipe.settings import KafkaSettings

log = logging.getLogger(__name__)
Place = tuple[str, int, int]  # topic, partition, offset


@dataclass(slots=True, frozen=True)
class Fetched:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


async def fetch_records(
    kafka: KafkaSettings, places: Iterable[Place], *, idle_s: float = 3.0
) -> dict[Place, Fetched | None]:
    wanted: dict[TopicPartition, list[int]] = {}
    for topic, partition, offset in places:
        wanted.setdefault(TopicPartition(topic, partition), []).append(offset)
    out: dict[Place, Fetched | None] = {}
    if not wanted:
        return out
    consumer = AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=256 * 1024,
        fetch_max_wait_ms=50,
        **client_kwargs(kafka),
    )
    await start_client(
        consumer, kafka, "check the candidate records", hint="kafka.bootstrap / --bootstrap"
    )
    try:
        todo: dict[TopicPartition, list[int]] = {}
        for tp, offsets in wanted.items():
            parts = consumer.partitions_for_topic(tp.topic)
            if parts is None:
                with contextlib.suppress(ke.KafkaError):
                    await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(tp.topic) or set()
            if tp.partition in parts:
                todo[tp] = sorted(set(offsets), reverse=True)  # next wanted is last
            else:
                out.update({(tp.topic, tp.partition, o): None for o in offsets})
        await _read(consumer, todo, out, idle_s)
    finally:
        await consumer.stop()
    return out


async def _read(
    consumer: AIOKafkaConsumer,
    todo: dict[TopicPartition, list[int]],
    out: dict[Place, Fetched | None],
    idle_s: float,
) -> None:
    if not todo:
        return
    consumer.assign(list(todo))
    for tp, offsets in todo.items():
        consumer.seek(tp, offsets[-1])
    loop = asyncio.get_running_loop()
    last_seen = dict.fromkeys(todo, loop.time())
    while todo:
        got = await consumer.getmany(*todo, timeout_ms=200, max_records=500)
        now = loop.time()
        for tp, records in got.items():
            if tp not in todo:
                continue
            offsets = todo[tp]
            last_seen[tp] = now
            for r in records:
                while offsets and offsets[-1] < r.offset:  # passed over: not there
                    out[(tp.topic, tp.partition, offsets.pop())] = None
                if not offsets:
                    break
                if r.offset == offsets[-1]:
                    offsets.pop()
                    out[(tp.topic, tp.partition, r.offset)] = Fetched(
                        tp.topic,
                        tp.partition,
                        r.offset,
                        r.timestamp,
                        r.key,
                        r.value,
                        list(r.headers),
                    )
            if offsets and records and offsets[-1] > records[-1].offset + 1:
                consumer.seek(tp, offsets[-1])  # far ahead: skip what lies between
        for tp in list(todo):
            if not todo[tp]:
                del todo[tp]
            elif now - last_seen[tp] > idle_s:
                log.debug("%s: nothing read for %gs; %s not found", tp, idle_s, todo[tp])
                out.update({(tp.topic, tp.partition, o): None for o in todo.pop(tp)})
        if got:
            consumer.pause(*[tp for tp in consumer.assignment() if tp not in todo])
