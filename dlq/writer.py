"""Writes dead letters to a topic; returns only after the broker acknowledged."""

from __future__ import annotations

from collections.abc import Sequence

from eventpipe.dlq.record import DeadLetter

from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.publisher import Ack, Publisher


class DeadLetterWriter:
    """Thin on purpose: a dead letter is a record like any other, produced with the
    same acknowledged producer, so a source/pipeline never marks its input done
    before its dead letter is stored."""

    def __init__(self, publisher: Publisher, topic: str) -> None:
        self.publisher = publisher
        self.topic = topic

    async def write(self, letters: Sequence[DeadLetter]) -> list[Ack]:
        if not letters:
            return []
        msgs = [KafkaMessage(d.key, d.value, d.kafka_headers()) for d in letters]
        ids = [f"dlq:{d.origin.topic}:{d.origin.partition}:{d.origin.offset}" for d in letters]
        return await self.publisher.publish_messages(self.topic, msgs, ids)
