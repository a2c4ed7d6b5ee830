"""Reads dead-letter topics as a snapshot: every record up to the end offsets seen
when the read starts, decoded into :class:`Entry` objects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from eventpipe.dlq.record import DeadLetter
from eventpipe.envelope.json import to_structured_dict
from eventpipe.envelope.kafka import from_kafka
from eventpipe.errors import EventpipeError
from eventpipe.kafka.client import client_kwargs, start_client
from eventpipe.settings import KafkaSettings


@dataclass(slots=True)
class Entry:
    """One record of a dead-letter topic.  Its CloudEvent is decoded when first
    asked for (a replay without ``--patch`` or ``--where`` never needs it; binary-mode
    records give their id and type from the ``ce_id`` / ``ce_type`` headers)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    letter: DeadLetter
    _decoded: tuple[str | None, str | None, dict[str, Any] | None] | None = field(
        default=None, repr=False
    )

    def _decode(self) -> tuple[str | None, str | None, dict[str, Any] | None]:
        if self._decoded is None:
            self._decoded = _decode_event(self.letter)
        return self._decoded

    def _header(self, name: str) -> str | None:
        for k, v in self.letter.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return None

    @property
    def event_id(self) -> str | None:
        found = self._header("ce_id")
        return found if found is not None else self._decode()[0]

    @property
    def event_type(self) -> str | None:
        found = self._header("ce_type")
        return found if found is not None else self._decode()[1]

    @property
    def event(self) -> dict[str, Any] | None:
        """The CloudEvent, structured, when the value decodes."""
        return self._decode()[2]

    @property
    def ref(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def failed_at(self) -> datetime:
        if self.letter.failed_at is not None:
            return self.letter.failed_at
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def to_doc(self, *, full: bool = False) -> dict[str, Any]:
        """The JSON shape of `--json`, `--where` and the admin API."""
        d = self.letter
        doc: dict[str, Any] = {
            "ref": self.ref,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "failed_at": self.failed_at.isoformat().replace("+00:00", "Z"),
            "pipeline": d.pipeline,
            "stage": d.stage,
            "step": d.step,
            "exception": {"class": d.exception_class, "message": d.exception_message},
            "attempts": d.attempts,
            "retriable": d.retriable,
            "origin": {
                "topic": d.origin.topic,
                "partition": d.origin.partition,
                "offset": d.origin.offset,
            },
            "event_id": self.event_id,
            "event_type": self.event_type,
            "event": self.event,
        }
        if d.payload_ref is not None:  # the value is kept in eventpipe.dlq_payloads
            doc["payload"] = {"ref": d.payload_ref, "size": d.payload_size}
            if d.value is None:
                doc["payload"]["found"] = False
        if d.http_status is not None:
            doc["http"] = {"status": d.http_status, "body": d.http_body}
        if full:
            doc["exception"]["stacktrace"] = d.stacktrace
            doc["headers"] = {k: v.decode("utf-8", "replace") for k, v in d.headers}
            doc["key"] = d.key.decode("utf-8", "replace") if d.key is not None else None
            if self.event is None and d.value is not None:
                doc["value"] = d.value.decode("utf-8", "replace")
        return doc


def _decode_event(letter: DeadLetter) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """(id, type, structured event) of a dead letter's value, as far as it decodes."""
    try:
        ev = from_kafka(letter.key, letter.value, letter.headers)
    except EventpipeError:
        hdr = dict(letter.headers)
        event_id = hdr["ce_id"].decode("utf-8", "replace") if "ce_id" in hdr else None
        event_type = hdr["ce_type"].decode("utf-8", "replace") if "ce_type" in hdr else None
        return event_id, event_type, None
    return ev.id, ev.type, to_structured_dict(ev)


def decode_entry(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> Entry:
    return Entry(topic, partition, offset, timestamp_ms, DeadLetter.from_kafka(key, value, headers))


async def read_snapshot(
    kafka: KafkaSettings,
    topics: Sequence[str],
    *,
    start_ms: int | None = None,
) -> AsyncIterator[Entry]:
    """Every record of ``topics`` up to the end offsets at the start (optionally
    from the first offset at or after ``start_ms``), partition by partition."""
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **client_kwargs(kafka))
    await start_client(consumer, kafka, "read the dead-letter topic")
    try:
        tps: list[TopicPartition] = []
        for t in topics:
            parts = consumer.partitions_for_topic(t)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(t) or set()
            tps.extend(TopicPartition(t, p) for p in sorted(parts))
        if not tps:
            return
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        begin = await consumer.beginning_offsets(tps)
        starts = dict(begin)
        if start_ms is not None:
            found = await consumer.offsets_for_times({tp: start_ms for tp in tps})
            for tp, ot in found.items():
                starts[tp] = ot.offset if ot is not None else end[tp]
        for tp in tps:
            consumer.seek(tp, starts[tp])
        # Tansu reports the latest offset of a partition as the base offset of its
        # last record batch + 1, not the high watermark, so end offsets are only a
        # lower bound: read until every partition is past it and a poll comes back
        # empty (records still arriving then belong to the next read).
        while True:
            batch = await consumer.getmany(timeout_ms=300, max_records=2000)
            if not batch:
                positions = {tp: await consumer.position(tp) for tp in tps}
                if all(positions[tp] >= end[tp] for tp in tps):
                    break
                continue
            for tp, records in batch.items():
                for r in records:
                    yield decode_entry(
                        tp.topic,
                        tp.partition,
                        r.offset,
                        r.timestamp,
                        r.key,
                        r.value,
                        list(r.headers),
                    )
    finally:
        await consumer.stop()
