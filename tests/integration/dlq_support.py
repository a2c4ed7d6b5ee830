"""Dead letters for tests (no tests here): one built as a pipeline would write it,
and a dead-letter topic holding some."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import to_kafka
from eventpipe.errors import InvalidEventError
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings, TopicSpec


def letter(
    i: int,
    origin_topic: str,
    *,
    pipeline: str,
    stage: str,
    exc: Exception,
    failed_at: datetime | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    **extensions: Any,
) -> DeadLetter:
    ev = CloudEvent.create(
        "t.order",
        "/shop",
        {"n": i, "ok": False},
        id=f"ev-{i}",
        partitionkey=f"k{i}",
        **extensions,
    )
    m = to_kafka(ev)
    d = DeadLetter.from_exception(
        exc,
        key=m.key,
        value=m.value,
        headers=[*m.headers, *(headers or [])],
        pipeline=pipeline,
        stage=stage,
        origin=Origin(origin_topic, 0, 100 + i, 1),
        first_failed_at=failed_at,
    )
    if failed_at is not None:
        d.failed_at = failed_at
    return d


@dataclass
class Letters:
    dlq_topic: str
    origin: str
    refs: dict[str, str]  # event id -> ref


async def write_letters(settings: Settings, origin: str, letters: list[DeadLetter]) -> Letters:
    """``letters`` on a new dead-letter topic ``<origin>.dlq`` (one partition)."""
    dlq_topic = f"{origin}.dlq"
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=dlq_topic, partitions=1)])
    async with Publisher(settings) as pub:
        acks = await DeadLetterWriter(pub, dlq_topic).write(letters)
    refs = {}
    for d, ack in zip(letters, acks, strict=True):
        ev_id = dict(d.headers)["ce_id"].decode()
        refs[ev_id] = f"{dlq_topic}:{ack.partition}:{ack.offset}"
    return Letters(dlq_topic, origin, refs)


def two_pipelines(topic: str, transform_error: Exception, **ev2: Any) -> list[DeadLetter]:
    """Six dead letters read from ``topic``: pipeline ``orders`` ev-0 (validate, three
    days ago), ev-1 (validate), ev-2 (transform: ``transform_error``; ``ev2`` adds
    headers or extensions), ev-5 (decode); pipeline ``payments`` ev-3, ev-4 (sink)."""
    old = datetime.now(UTC) - timedelta(days=3)
    invalid = InvalidEventError("data.n", "bad")
    return [
        letter(0, topic, pipeline="orders", stage="validate", exc=invalid, failed_at=old),
        letter(1, topic, pipeline="orders", stage="validate", exc=invalid),
        letter(2, topic, pipeline="orders", stage="transform", exc=transform_error, **ev2),
        letter(3, topic, pipeline="payments", stage="sink", exc=ValueError("x")),
        letter(4, topic, pipeline="payments", stage="sink", exc=ValueError("y")),
        letter(5, topic, pipeline="orders", stage="decode", exc=ValueError("z")),
    ]
