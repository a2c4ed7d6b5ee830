"""Writes dead letters to a topic; returns only after the broker acknowledged.

A value too large for the broker (over ``kafka.max_request_size``, or refused by
the broker as too large) is kept in Postgres first (:mod:`eventpipe.dlq.payloads`)
and the dead letter goes without it, naming it: no dead letter drops the bytes.
One still too large without its value (a key, a header or the exception message
alone over the limit) goes with those fields cut to ``FIELD_LIMIT`` bytes, each
original kept in Postgres too and named, with its size, by the
``eventpipe.dlq.cut`` header: the source moves on, and nothing is lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import orjson
from psycopg_pool import AsyncConnectionPool

from eventpipe.dlq import payloads
from eventpipe.dlq.record import DeadLetter, cut_text
from eventpipe.envelope.kafka import KafkaMessage, from_kafka
from eventpipe.errors import EventpipeError
from eventpipe.kafka.batches import record_size
from eventpipe.kafka.client import RecordTooLargeError
from eventpipe.publisher import Ack, PublishBatchError, Publisher

FIELD_LIMIT = 1024
"""What is left of a key, header or exception message cut from a dead letter still
too large without its value."""


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
        await self._fit([d for d in letters if record_size(_message(d)) > limit], limit)
        try:
            return await self._publish(letters)
        except PublishBatchError as exc:
            # the broker's own limit may be below ours: keep those values (and cut
            # what is still too large) too, once
            refused = [i for i, err in exc.failed.items() if isinstance(err, RecordTooLargeError)]
            if len(refused) < len(exc.failed) or not await self._fit(
                [letters[i] for i in refused], 0
            ):
                raise
            acks = dict(exc.acked)
            again = await self._publish([letters[i] for i in refused])
            acks.update(zip(refused, again, strict=True))
            return [acks[i] for i in range(len(letters))]

    async def _publish(self, letters: Sequence[DeadLetter]) -> list[Ack]:
        msgs = [_message(d) for d in letters]
        ids = [_event_id(d) for d in letters]
        return await self.publisher.publish_messages(self.topic, msgs, ids, via="dead-letter")

    async def _fit(self, letters: Sequence[DeadLetter], limit: int) -> bool:
        """Keep the values of ``letters`` in Postgres; then cut the fields of those still
        over ``limit`` (their originals kept too).  Whether anything changed (nothing
        can without a pool)."""
        if self.pool is None:
            return False
        todo = [d for d in letters if _keepable(d)]
        refs = await payloads.keep(self.pool, [d.value or b"" for d in todo]) if todo else []
        for d, ref in zip(todo, refs, strict=True):
            d.payload_ref, d.payload_size = ref, len(d.value or b"")
        over = [(d, _oversized(d)) for d in letters if record_size(_message(d)) > limit]
        originals = [raw for _, fields in over for _, raw in fields]
        if not originals:
            return bool(todo)
        kept = iter(await payloads.keep(self.pool, originals))
        for d, fields in over:
            if fields:
                _cut(d, [(name, len(raw), next(kept)) for name, raw in fields])
        return True


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


def _oversized(d: DeadLetter) -> list[tuple[str, bytes]]:
    """The fields of ``d`` over ``FIELD_LIMIT``: (name, original bytes)."""
    fields = [("key", d.key or b"")]
    fields += [(f"header:{name}", value) for name, value in d.headers]
    fields += [("exception.message", d.exception_message.encode())]
    fields += [("exception.stacktrace", d.stacktrace.encode())]
    return [(name, raw) for name, raw in fields if len(raw) > FIELD_LIMIT]


def _cut(d: DeadLetter, cut: list[tuple[str, int, str]]) -> None:
    """Cut the named fields of ``d`` to ``FIELD_LIMIT`` and name them in ``d.cut``."""
    names = {name for name, _, _ in cut}
    if "key" in names and d.key is not None:
        d.key = d.key[:FIELD_LIMIT]
    d.headers = [(k, v[:FIELD_LIMIT] if f"header:{k}" in names else v) for k, v in d.headers]
    if "exception.message" in names:
        d.exception_message = cut_text(d.exception_message, FIELD_LIMIT)
    if "exception.stacktrace" in names:
        d.stacktrace = cut_text(d.stacktrace, FIELD_LIMIT)
    done = orjson.loads(d.cut) if d.cut else []
    done += [{"field": name, "size": size, "ref": ref} for name, size, ref in cut]
    d.cut = orjson.dumps(done).decode()
