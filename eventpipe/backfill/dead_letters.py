"""Dead letters a backfill has met before.

A record that fails in a backfill has usually failed before: in the live
pipeline, or in an earlier backfill of the same range.  Its dead letter is then
already on the pipeline's dead-letter topic (perhaps replayed since), and writing
another would show the same poison twice, as new and never replayed.  So before
a run the dead-letter topic is read from ``--from`` (less a minute of clock skew:
a record's dead letter is written after the record) and the origins of its
letters are kept; a record that fails again from the same origin is counted as
``already_dead_lettered`` (and ``already_replayed`` when an operator replayed that
dead letter: ``eventpipe.dlq_replays``) and not written again.

The origin is where the record was read, ``(topic, partition, offset, timestamp)``
(the timestamp tells a topic that is new under an old name apart); rows read from
tables (``--source table``, partition -1) have no offsets, so theirs is the
CloudEvent id, deterministic for a row version.

Only the origins are held: a few tuples per dead letter, not the records.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from eventpipe.dlq.record import DeadLetter
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.publisher import Ack
from eventpipe.settings import KafkaSettings

from .topic_reader import read_range

log = logging.getLogger(__name__)

SKEW_MS = 60_000
Key = tuple[str, int, int | str | None, int | None]


def origin_key(
    topic: str | None,
    partition: int | None,
    offset: int | None,
    timestamp_ms: int | None,
    headers: Sequence[tuple[str, bytes]],
) -> Key | None:
    if topic is None or partition is None:
        return None
    if partition >= 0:
        return (topic, partition, offset, timestamp_ms)
    for k, v in headers:  # a table row: its CloudEvent id (binary mode)
        if k == "ce_id":
            return (topic, -1, v.decode("utf-8", "replace"), None)
    return None


def letter_key(d: DeadLetter) -> Key | None:
    o = d.origin
    return origin_key(o.topic, o.partition, o.offset, o.timestamp_ms, d.headers)


@dataclass
class KnownDeadLetters:
    """Origin -> whether a dead letter of it was replayed."""

    origins: dict[Key, bool] = field(default_factory=dict)

    def get(self, key: Key | None) -> bool | None:
        """None: never dead-lettered; else whether it was replayed."""
        return self.origins.get(key) if key is not None else None

    def add(self, key: Key | None) -> None:
        if key is not None:
            self.origins.setdefault(key, False)


async def load_known(
    kafka: KafkaSettings,
    pool: AsyncConnectionPool,
    *,
    dlq_topic: str,
    source_topics: Collection[str],
    since_ms: int,
) -> KnownDeadLetters:
    """The origins (in ``source_topics``) of the letters on ``dlq_topic`` from
    ``since_ms`` on, and which of those letters were replayed."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            'select partition, "offset" from eventpipe.dlq_replays where dlq_topic = %s',
            (dlq_topic,),
        )
        replayed = {(p, o) for p, o in await cur.fetchall()}
    known = KnownDeadLetters()
    async for r in read_range(kafka, [dlq_topic], since_ms - SKEW_MS):
        d = DeadLetter.from_kafka(r.key, None, list(r.headers or ()))
        if d.origin.topic not in source_topics:
            continue
        key = letter_key(d)
        if key is not None:
            was = known.origins.get(key, False)
            known.origins[key] = was or (r.partition, r.offset) in replayed
    log.debug("backfill: %d dead-lettered origin(s) on %s", len(known.origins), dlq_topic)
    return known


class RecognisedDeadLetters(DeadLetterWriter):
    """Writes through ``inner`` only the letters whose origin is not known; the
    others are noted in ``already`` (origin -> replayed) for the lane to count."""

    def __init__(self, inner: DeadLetterWriter, known: KnownDeadLetters) -> None:
        super().__init__(inner.publisher, inner.topic)
        self.inner = inner
        self.known = known
        self.already: dict[Key, bool] = {}

    async def write(self, letters: Sequence[DeadLetter]) -> list[Ack]:
        new: list[DeadLetter] = []
        keys: list[Key | None] = []
        for d in letters:
            key = letter_key(d)
            was = self.known.get(key)
            if was is None:
                new.append(d)
                keys.append(key)
            else:
                assert key is not None
                self.already[key] = was
        acks = await self.inner.write(new) if new else []
        for key in keys:  # stored: a later failure of the same origin is not new
            self.known.add(key)
        return acks
