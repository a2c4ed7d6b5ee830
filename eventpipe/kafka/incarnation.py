"""Is a mark still about the topic it was taken on?

Marks, ledgers and progress rows keyed by (topic, partition, offset) -- the
exactly-once sinks' high-water marks, the DLQ replay ledger, a backfill's
progress -- belong to one incarnation of a topic (ARCHITECTURE.md section 5).
A topic deleted and created again under its name (an embedded broker that keeps
topics in memory while PostgreSQL keeps its data; a topic re-created in
production; a move to another cluster) starts again at offset 0, and a mark of
the old one would make everything up to it look done.  So before a mark is used:

* when the mark was written with the topic's id and the broker gives ids
  (Kafka topic ids, Metadata v10+; Tansu gives them too), the ids must match;
* otherwise the partition must reach past the mark: its end offset above it.
  ListOffsets(latest) is only a lower bound on some brokers (Tansu answers the
  base offset of the last record batch + 1), so an end at or below the mark is
  confirmed with the high watermark of a fetch before it counts.

A mark that fails either check is :class:`Stale`, and the owner's policy
(``on_topic_reset``) decides: ``fail`` raises :class:`TopicResetError` naming
the topic, partition, mark, end offset and the option that resets; ``reset``
logs the same facts and the owner drops the mark.  Nothing is skipped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as ke

from eventpipe.errors import PermanentError
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.kafka.client import client_kwargs, wrap_kafka_error
from eventpipe.settings import KafkaSettings

log = logging.getLogger(__name__)

OnTopicReset = Literal["fail", "reset"]
RETIRED = uuid.UUID(int=0)
"""The id ledger rows get when an operator let an earlier incarnation go."""

_CONFIRM_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Mark:
    """The last offset a mark covers in a partition, and the topic id it was
    written under (None: unknown)."""

    topic: str
    partition: int
    offset: int
    topic_id: uuid.UUID | None = None

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class Stale:
    """A mark of another incarnation of its topic."""

    mark: Mark
    topic_id: uuid.UUID | None  # the topic's id now
    end: int | None  # the partition's end offset now (a lower bound)

    def describe(self) -> str:
        m = self.mark
        if m.topic_id is not None and self.topic_id is not None:
            why = f"the topic's id is {self.topic_id}, the mark's {m.topic_id}"
        else:
            why = "the partition ends below the mark"
        end = "unknown" if self.end is None else str(self.end)
        return (
            f"topic {m.topic} partition {m.partition}: mark at offset {m.offset}, "
            f"end offset {end} ({why})"
        )


class TopicResetError(PermanentError):
    """Marks of an earlier incarnation of a topic, and the policy says stop."""

    def __init__(self, owner: str, stale: Sequence[Stale], option: str) -> None:
        self.owner = owner
        self.stale = list(stale)
        self.option = option
        lines = "; ".join(s.describe() for s in stale)
        super().__init__(
            f"{owner}: a topic was deleted and created again since its marks were "
            f"written: {lines}. Nothing was skipped and nothing is read until you "
            f"decide: if the topic was re-created on purpose, set {option} to drop "
            "these marks and read the partitions from their beginning"
        )


class TopicProbe:
    """What the broker says now: topic ids (through ``admin``) and partition ends."""

    def __init__(self, admin: TopicAdmin, kafka: KafkaSettings) -> None:
        self.admin = admin
        self.kafka = kafka

    async def ids(self, topics: Iterable[str]) -> dict[str, uuid.UUID | None]:
        return await self.admin.topic_ids(topics)

    async def ends(
        self, tps: Iterable[tuple[str, int]], marks: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], int]:
        """End offset per partition (absent: no such partition).  Where ListOffsets
        puts it at or below ``marks[tp]``, the fetch's high watermark decides."""
        wanted = sorted(set(tps))
        if not wanted:
            return {}
        consumer = AIOKafkaConsumer(
            group_id=None, enable_auto_commit=False, **client_kwargs(self.kafka)
        )
        try:
            await consumer.start()
            known = {
                (t, p)
                for t in {t for t, _ in wanted}
                for p in (consumer.partitions_for_topic(t) or ())
            }
            atps = [TopicPartition(t, p) for t, p in wanted if (t, p) in known]
            if not atps:
                return {}
            found = await consumer.end_offsets(atps)
            out = {(tp.topic, tp.partition): o for tp, o in found.items()}
            doubt = [
                tp
                for tp in atps
                if out[(tp.topic, tp.partition)] <= marks.get((tp.topic, tp.partition), -1)
            ]
            if doubt:
                for tp, hw in (await _highwaters(consumer, doubt)).items():
                    key = (tp.topic, tp.partition)
                    out[key] = max(out[key], hw)
            return out
        except ke.KafkaError as exc:
            raise wrap_kafka_error(exc, "list offsets") from exc
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()


async def _highwaters(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The high watermark a fetch from each partition's start reports."""
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    out: dict[TopicPartition, int] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _CONFIRM_TIMEOUT_S
    while len(out) < len(tps) and loop.time() < deadline:
        await consumer.getmany(*tps, timeout_ms=200, max_records=1)
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None:
                out[tp] = hw
    return out


async def find_stale(probe: TopicProbe, marks: Sequence[Mark]) -> list[Stale]:
    """The marks that belong to another incarnation of their topic.  A topic that
    does not exist now is not judged (there is nothing to read from it)."""
    if not marks:
        return []
    ids = await probe.ids({m.topic for m in marks})
    present = [m for m in marks if m.topic in ids]
    by_id = [
        m
        for m in present
        if m.topic_id not in (None, RETIRED)
        and ids[m.topic] is not None
        and m.topic_id != ids[m.topic]
    ]
    unsure = [m for m in present if m.topic_id is None or ids[m.topic] is None]
    if not by_id and not unsure:
        return []
    suspects = by_id + unsure
    ends = await probe.ends([m.tp for m in suspects], {m.tp: m.offset for m in suspects})
    stale = [Stale(m, ids[m.topic], ends.get(m.tp)) for m in by_id]
    for m in unsure:
        end = ends.get(m.tp)
        if end is not None and end <= m.offset:
            stale.append(Stale(m, ids[m.topic], end))
    return stale


P = TypeVar("P", bound=Hashable)


def ends_below(
    highwater: Callable[[P], int | None], nexts: Mapping[P, int], asked: dict[P, int]
) -> dict[P, int]:
    """The partitions whose end -- the high watermark of the consumer's last fetch --
    is below the next offset to read, and that end.  A broker that does not answer
    OffsetOutOfRange to a fetch past the end (Tansu) leaves a consumer's position
    where it was after its topic was deleted and created again: the new topic's
    records below it are never read, and nothing else shows it.  Each partition is
    named once per end (``asked`` remembers them between calls); the caller asks
    :func:`find_stale` whether it is a new topic."""
    out: dict[P, int] = {}
    for tp, nxt in nexts.items():
        hw = highwater(tp)
        if hw is None or hw >= nxt:
            asked.pop(tp, None)
            continue
        if asked.get(tp) == hw:
            continue  # asked already about this end
        asked[tp] = hw
        out[tp] = hw
    return out


def apply_policy(stale: Sequence[Stale], policy: OnTopicReset, *, owner: str, option: str) -> None:
    """``fail``: raise :class:`TopicResetError`.  ``reset``: log what is dropped
    (the caller drops it)."""
    if not stale:
        return
    if policy == "fail":
        raise TopicResetError(owner, stale, option)
    for s in stale:
        log.warning(
            "%s: %s; the topic was deleted and created again, so this mark is dropped "
            "and the partition is read from its beginning (on_topic_reset: reset)",
            owner,
            s.describe(),
        )


__all__ = [
    "RETIRED",
    "Mark",
    "OnTopicReset",
    "Stale",
    "TopicProbe",
    "TopicResetError",
    "apply_policy",
    "ends_below",
    "find_stale",
]
