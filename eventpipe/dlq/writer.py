"""Writes dead letters to a topic; returns only after the broker acknowledged.

A value too large for the broker (over ``kafka.max_request_size``, or refused by
the broker as too large) is kept in Postgres first (:mod:`eventpipe.dlq.payloads`)
and the dead letter goes without it, naming it: no dead letter drops the bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from psycopg_pool import AsyncConnectionPool

from eventpipe.dlq import payloads
from eventpipe.dlq.record import DeadLetter
from eventpipe.envelope.kafka import KafkaMessage, from_kafka
from eventpipe.errors import EventpipeError
from eventpipe.kafka.batches import record_size
from eventpipe.kafka.client import RecordTooLargeError
from eventpipe.publisher import Ack, PublishBatchError, Publisher


class DeadLetterWriter:
    """Thin on purpose: a dead letter is a record like any other, produced with the
    same acknowledged producer, so a source/pipeline never marks its input done
    before its dead letter is stored.  Without ``pool`` an oversize value cannot be
    kept, and the write fails (it is never sent empty).  ``written`` counts the dead
    letters the broker acknowledged, by stage (what a component's status shows)."""

    def __init__(
        self, publisher: Publisher, topic: str, *, pool: AsyncConnectionPool | None = None
    ) -> None:
        self.publisher = publisher
        self.topic = topic
        self.pool = pool
        self.written: Counter[str] = Counter()

    async def write(self, letters: Sequence[DeadLetter]) -> list[Ack]:
        if not letters:
            return []
        acks = await self._write(letters)
        self.written.update(d.stage for d in letters)
        return acks

    async def _write(self, letters: Sequence[DeadLetter]) -> list[Ack]:
        limit = self.publisher.kafka.max_request_size
        await self._keep([d for d in letters if record_size(_message(d)) > limit])
        try:
            return await self._publish(letters)
        except PublishBatchError as exc:
            # the broker's own limit may be below ours: keep those values too, once
            refused = [
                i
                for i, err in exc.failed.items()
                if isinstance(err, RecordTooLargeError) and _keepable(letters[i])
            ]
            if self.pool is None or not refused or len(refused) < len(exc.failed):
                raise
            await self._keep([letters[i] for i in refused])
            acks = dict(exc.acked)
            again = await self._publish([letters[i] for i in refused])
            acks.update(zip(refused, again, strict=True))
            return [acks[i] for i in range(len(letters))]

    async def _publish(self, letters: Sequence[DeadLetter]) -> list[Ack]:
        msgs = [_message(d) for d in letters]
        ids = [_event_id(d) for d in letters]
        return await self.publisher.publish_messages(self.topic, msgs, ids, via="dead-letter")

    async def _keep(self, letters: Sequence[DeadLetter]) -> None:
        todo = [d for d in letters if _keepable(d)]
        if not todo or self.pool is None:
            return
        refs = await payloads.keep(self.pool, [d.value for d in todo if d.value is not None])
        for d, ref in zip(todo, refs, strict=True):
            d.payload_ref, d.payload_size = ref, len(d.value or b"")


def _event_id(d: DeadLetter) -> str:
    """The original record's CloudEvent id (the trace index keeps dead letters under
    it), else where the record was read."""
    for name, value in d.headers:
        if name == "ce_id":
            return value.decode("utf-8", "replace")
    try:
        return from_kafka(d.key, d.value, d.headers).id
    except EventpipeError:
        return f"dlq:{d.origin.topic}:{d.origin.partition}:{d.origin.offset}"


def _keepable(d: DeadLetter) -> bool:
    return bool(d.value) and d.payload_ref is None


def _message(d: DeadLetter) -> KafkaMessage:
    return KafkaMessage(d.key, None if d.payload_ref else d.value, d.kafka_headers())
