"""The kafka source's input topic deleted and created again while the source runs.

On Tansu a fetch past the new topic's end answers empty with a high watermark
below the fetch offset, and the consumer would wait there for good (the new
records never read, nothing said); on Apache Kafka the broker answers
OffsetOutOfRange and the position is reset.  Either way the source tells it
apart from a redelivery as pipelines do (eventpipe.kafka.incarnation): by
default it stops with an error naming the topic and ``read.on_topic_reset``;
with ``read.on_topic_reset: reset`` it reads the new topic from its beginning,
and the new records' default ids do not repeat the old topic's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka.structs import TopicPartition

from eventpipe.connectors.kafka_source import KafkaTopicSource
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.kafka.incarnation import TopicResetError
from eventpipe.plugin import Component
from eventpipe.settings import Settings, TopicSpec
from tests.helpers import read_events
from tests.integration.test_kafka_source import ctx, produce, source  # noqa: F401
from tests.integration.test_pipeline_support import recreate_topic


@pytest.fixture
async def foreign(settings: Settings) -> AsyncIterator[str]:
    name = f"ksreset-{uuid.uuid4().hex[:8]}"
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics(
            [TopicSpec(name=name, partitions=1), f"{name}.out", f"{name}.out.dlq"]
        )
    yield name


def values(life: str, ns: range) -> list[tuple[bytes, bytes]]:
    return [(b"k", orjson.dumps({"life": life, "n": n})) for n in ns]


async def old_life(src: KafkaTopicSource, settings: Settings, foreign: str) -> None:
    """5 records read and committed, then the topic created again with 3 new ones."""
    await produce(settings, foreign, values("old", range(5)))
    await src.start()
    assert len(await read_events(settings.kafka.bootstrap, f"{foreign}.out", 5)) == 5
    for _ in range(200):
        if src.position().get(f"{foreign}/0") == 5:
            break
        await asyncio.sleep(0.1)
    assert src.position() == {f"{foreign}/0": 5}
    await recreate_topic(settings, foreign)
    await produce(settings, foreign, values("new", range(3)))


async def test_a_topic_recreated_while_the_source_runs_stops_it(ctx, settings, foreign):  # noqa: F811
    src = source(ctx, foreign, f"{foreign}.out")
    failures: list[BaseException] = []

    def failed(comp: Component, exc: BaseException) -> None:
        failures.append(exc)

    src.on_failure = failed
    try:
        await old_life(src, settings, foreign)
        for _ in range(300):  # 30 s
            if failures:
                break
            await asyncio.sleep(0.1)
        st = src.status()
    finally:
        await src.stop()
    assert failures, (
        f"the new topic's records were never read and nothing said (state {st.state}, lag {st.lag})"
    )
    exc = failures[0]
    assert isinstance(exc, TopicResetError), repr(exc)
    assert f"topic {foreign} partition 0" in str(exc)
    assert f"sources.{src.name}.read.on_topic_reset: reset" in str(exc)
    assert st.state == "failed"
    assert st.last_error is not None and st.last_error.error_class.endswith(".TopicResetError")
    # nothing of the new topic was produced, and the old offset stays committed
    events = await read_events(settings.kafka.bootstrap, f"{foreign}.out", 5)
    assert [e.data["life"] for e in events] == ["old"] * 5
    assert src.position() == {f"{foreign}/0": 5}


async def test_with_on_topic_reset_the_new_topic_is_read_from_its_beginning(
    ctx,  # noqa: F811
    settings,
    foreign,
):
    src = source(
        ctx,
        foreign,
        f"{foreign}.out",
        read={"topics": [foreign], "session_timeout_ms": 3000, "on_topic_reset": "reset"},
    )
    failures: list[BaseException] = []
    src.on_failure = lambda comp, exc: failures.append(exc)
    try:
        await old_life(src, settings, foreign)
        events = await read_events(settings.kafka.bootstrap, f"{foreign}.out", 8, timeout=30)
        await produce(settings, foreign, values("new", range(3, 5)))
        events = await read_events(settings.kafka.bootstrap, f"{foreign}.out", 10, timeout=30)
    finally:
        await src.stop()
    assert failures == []
    got = [(e.data["life"], e.data["n"]) for e in events]
    assert got == [("old", n) for n in range(5)] + [("new", n) for n in range(5)]
    old_ids = {e.id for e in events[:5]}
    new_ids = {e.id for e in events[5:]}
    assert old_ids == {f"{foreign}-0-{o}" for o in range(5)}
    assert len(new_ids) == 5 and not new_ids & old_ids, (old_ids, new_ids)
    assert src.position() == {f"{foreign}/0": 5}


async def test_a_redelivery_of_the_same_topic_goes_on_with_the_same_ids(
    ctx,  # noqa: F811
    settings,
    foreign,
):
    """The consumer sought back behind the source's back (as a redelivery would):
    the broker says it is the same topic, so the source goes on (at least once),
    the records read again keep their ids, and nothing stops."""
    src = source(ctx, foreign, f"{foreign}.out")
    failures: list[BaseException] = []
    src.on_failure = lambda comp, exc: failures.append(exc)
    out = f"{foreign}.out"
    try:
        await produce(settings, foreign, values("old", range(5)))
        await src.start()
        first = await read_events(settings.kafka.bootstrap, out, 5)
        for _ in range(200):
            if src.position().get(f"{foreign}/0") == 5:
                break
            await asyncio.sleep(0.1)
        assert src._consumer is not None
        src._consumer.seek(TopicPartition(foreign, 0), 1)
        again = await read_events(settings.kafka.bootstrap, out, 9, timeout=30)
        await produce(settings, foreign, values("old", range(5, 7)))
        events = await read_events(settings.kafka.bootstrap, out, 11, timeout=30)
        st = src.status()
    finally:
        await src.stop()
    assert failures == [] and st.state == "running"
    assert [e.id for e in again[5:]] == [e.id for e in first[1:]]
    assert [e.id for e in events[9:]] == [f"{foreign}-0-5", f"{foreign}-0-6"]
    assert src.position() == {f"{foreign}/0": 7}
