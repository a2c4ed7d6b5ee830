"""Reading a pipeline's source topics over a time range, partition by partition.

Where a partition starts: ``offsets_for_times(--from)``, the first offset whose
timestamp is at or after it.  Where it ends: at the first record whose
timestamp is at or after ``--to`` ("read until records pass T2"), or at the end
of the partition.  Records in between whose timestamps fall outside the range
(producers' clocks disagree) are skipped and counted as ``outside``.

The end of a partition is found as :mod:`eventpipe.dlq.reader` does: Tansu
reports the latest offset as the base offset of the last record batch + 1, not
the high watermark, so end offsets are only a lower bound; a partition is at
its end once the position is past them and a poll comes back empty.  ``--to``
is capped at the job's creation time, so records appended while it runs (the
live pipeline's business) end the read rather than prolong it.

Each worker has one consumer, in the job's own consumer group
(``<pipeline group>.backfill.<job>``), with partitions assigned by hand: the
live pipeline's group never sees it.  Positions are kept in Postgres (the job
record); they are also committed to that group, best effort, so lag tools show
the backfill.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as ke
from aiokafka.structs import ConsumerRecord, OffsetAndTimestamp

from eventpipe.kafka.client import client_kwargs, start_client, wrap_kafka_error
from eventpipe.pipelines.batch import Record
from eventpipe.settings import KafkaSettings

from .job import Progress
from .options import BackfillError

log = logging.getLogger("eventpipe.backfill")


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@dataclass
class Batch:
    """Records in range from one read, and where the partition (or table) stands after it."""

    records: list[Record]
    next_offset: int
    outside: int = 0
    done: bool = False
    last_key: list[str] | None = None


def _consumer(kafka: KafkaSettings, group: str | None, max_records: int) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        **client_kwargs(kafka),
    )


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop; aiokafka's coordinator may raise CancelledError from its own cancelled
    task when stopped right after start, which must not pass for ours being cancelled."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def _partitions(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    tps: list[TopicPartition] = []
    missing: list[str] = []
    for t in topics:
        parts = consumer.partitions_for_topic(t)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(t)
        if not parts:
            missing.append(t)
            continue
        tps.extend(TopicPartition(t, p) for p in sorted(parts))
    if missing:
        raise BackfillError(f"source topic(s) {', '.join(missing)} do not exist")
    return tps


def _found(hit: OffsetAndTimestamp | None, default: int) -> int:
    """An ``offsets_for_times`` answer, or ``default`` when no record is that late.
    (Tansu answers "none" as offset 0 with timestamp -1 rather than null.)"""
    if hit is None or hit.offset < 0 or hit.timestamp < 0:
        return default
    return hit.offset


async def plan_partitions(
    kafka: KafkaSettings,
    topics: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    known: set[tuple[str, int]] | None = None,
) -> list[Progress]:
    """A progress row per partition (those not in ``known``), starting at
    ``offsets_for_times(start)``, with an estimate of how many records to read."""
    consumer = _consumer(kafka, None, 500)
    await start_client(consumer, kafka, "read the backfill's topics")
    try:
        tps = await _partitions(consumer, topics)
        tps = [tp for tp in tps if (tp.topic, tp.partition) not in (known or set())]
        if not tps:
            return []
        try:
            ends = await consumer.end_offsets(tps)
            firsts = await consumer.offsets_for_times({tp: ms(start) for tp in tps})
            lasts = await consumer.offsets_for_times({tp: ms(end) for tp in tps})
        except ke.KafkaError as exc:
            raise wrap_kafka_error(exc, "list offsets") from exc
        out = []
        for tp in tps:
            begin = _found(firsts.get(tp), ends[tp])
            stop = _found(lasts.get(tp), ends[tp])
            out.append(
                Progress(
                    stream=tp.topic,
                    partition=tp.partition,
                    start_offset=begin,
                    next_offset=begin,
                    estimate=max(0, stop - begin),
                )
            )
        return out
    finally:
        await stop_consumer(consumer)


def to_record(index: int, r: ConsumerRecord[bytes, bytes]) -> Record:
    return Record(
        index=index,
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        timestamp_ms=r.timestamp,
        key=r.key,
        value=r.value,
        headers=list(r.headers or ()),
    )


class PartitionReader:
    """One consumer, reading one assigned partition at a time."""

    def __init__(self, kafka: KafkaSettings, group: str | None, *, max_records: int) -> None:
        self.kafka = kafka
        self.group = group
        self.max_records = max_records
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._consumer is None:
            consumer = _consumer(self.kafka, self.group, self.max_records)
            await start_client(consumer, self.kafka, "read the backfill's topics")
            self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await stop_consumer(consumer)

    async def __aenter__(self) -> PartitionReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def batches(
        self, p: Progress, start_ms: int, end_ms: int, *, poll_ms: int = 300
    ) -> AsyncIterator[Batch]:
        """Batches of records in ``[start_ms, end_ms)`` from ``p.next_offset`` on;
        the last one has ``done`` set."""
        consumer = self._consumer
        assert consumer is not None, "start() the reader first"
        tp = TopicPartition(p.stream, p.partition)
        consumer.assign([tp])
        consumer.seek(tp, p.next_offset)
        try:
            end_hint = (await consumer.end_offsets([tp]))[tp]
        except ke.KafkaError as exc:
            raise wrap_kafka_error(exc, "list offsets") from exc
        while True:
            try:
                got = await consumer.getmany(tp, timeout_ms=poll_ms, max_records=self.max_records)
            except ke.KafkaError as exc:
                raise wrap_kafka_error(exc, f"read {tp.topic}[{tp.partition}]") from exc
            recs = got.get(tp, [])
            if not recs:
                pos = await consumer.position(tp)
                if pos >= end_hint:
                    yield Batch([], max(pos, p.next_offset), done=True)
                    return
                continue
            records: list[Record] = []
            outside = 0
            passed: int | None = None
            for r in recs:
                if r.timestamp >= end_ms:
                    passed = r.offset
                    break
                if r.timestamp < start_ms:
                    outside += 1
                    continue
                records.append(to_record(len(records), r))
            next_offset = passed if passed is not None else recs[-1].offset + 1
            yield Batch(records, next_offset, outside, done=passed is not None)
            if passed is not None:
                return

    async def commit(self, p: Progress) -> None:
        """Best effort: the job record is what resumes; this is for lag tools."""
        consumer = self._consumer
        if consumer is None or self.group is None:
            return
        try:
            await consumer.commit({TopicPartition(p.stream, p.partition): p.next_offset})
        except (ke.KafkaError, AssertionError) as exc:
            log.debug("backfill: committing %s[%s] failed: %r", p.stream, p.partition, exc)


async def read_range(
    kafka: KafkaSettings,
    topics: Sequence[str],
    start_ms: int,
    end_ms: int | None = None,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topics`` from ``offsets_for_times(start_ms)`` to the end seen
    now (stopping a partition at its first record at or past ``end_ms`` when given),
    for comparisons.  Records are not filtered by time."""
    consumer = _consumer(kafka, None, 2000)
    await start_client(consumer, kafka, "read the backfill's topics")
    try:
        tps = await _partitions(consumer, topics)  # also the metadata end_offsets needs
        try:
            ends = await consumer.end_offsets(tps)
            firsts = await consumer.offsets_for_times({tp: start_ms for tp in tps})
        except ke.KafkaError as exc:
            raise wrap_kafka_error(exc, "list offsets") from exc
        starts = {tp: _found(firsts.get(tp), ends[tp]) for tp in tps}
        # a partition with nothing from start_ms on is not fetched at all
        active = {tp for tp in tps if starts[tp] < ends[tp]}
        if not active:
            return
        consumer.assign(sorted(active))
        for tp in active:
            consumer.seek(tp, starts[tp])
        while active:
            got = await consumer.getmany(*active, timeout_ms=300, max_records=2000)
            if not got:
                positions = {tp: await consumer.position(tp) for tp in active}
                if all(positions[tp] >= ends[tp] for tp in active):
                    return
                continue
            for tp, recs in got.items():
                for r in recs:
                    if end_ms is not None and r.timestamp >= end_ms:
                        active.discard(tp)
                        consumer.pause(tp)
                        break
                    yield r
    finally:
        await stop_consumer(consumer)
