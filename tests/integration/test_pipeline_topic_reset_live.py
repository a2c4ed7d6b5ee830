"""A source topic deleted and created again while its pipeline keeps running (no
restart, no rebalance of eventpipe's own).  The consumer's fetch position falls
back (the broker answers OffsetOutOfRange, aiokafka resets it) to offsets at or
below what the reader has already admitted; those are not redeliveries but the
new topic's records.  By default the pipeline stops with the same error as at
start (naming the topic and ``on_topic_reset``); with ``on_topic_reset: reset``
the marks are dropped and the new topic is read from its beginning.  A genuine
redelivery (same topic, a seek back) is still dropped: see
test_pipeline_reread.py and tests/unit/test_partition_reader.py."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.structs import TopicPartition
from faust.types import TP

from eventpipe.kafka.admin import TopicAdmin
from eventpipe.kafka.incarnation import TopicResetError
from eventpipe.publisher import Publisher
from eventpipe.service.runner import Service
from eventpipe.settings import Settings, TopicSpec
from tests.integration.test_pipeline_support import (
    ident,
    recreate_topic,
    running,
    runtime,
    sql,
    wait_rows,
    with_pipelines,
)
from tests.integration.test_pipeline_topic_reset import events, pipeline


async def _first_life(s: Settings, name: str, url: str) -> None:
    await sql(url, f"create table {name} (id text primary key, n int not null)")
    async with TopicAdmin(s.kafka) as ta:
        await ta.ensure_topics([TopicSpec(name=name, partitions=1)])


async def _wait_failure(svc: Service, within: float) -> BaseException | None:
    """The exception that stopped a component of ``svc`` (None: none within)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if svc.failure is not None:
            return svc.failure[1]
        await asyncio.sleep(0.2)
    return None


async def test_a_topic_recreated_while_running_stops_the_pipeline(settings: Settings) -> None:
    name = ident("live")
    url = settings.database.url.get_secret_value()
    s = with_pipelines(settings, pipeline(name))
    await _first_life(s, name, url)
    async with running(s) as svc:
        async with Publisher(s) as pub:
            await pub.publish_batch(name, events(name, range(5), "old"))
        assert await wait_rows(url, f"select count(*) from {name}", 5) == 5
        await recreate_topic(s, name)
        async with Publisher(s) as pub:  # offsets 0..2 of the new topic, below mark 4
            await pub.publish_batch(name, events(name, range(3), "new"))
        failure = await _wait_failure(svc, 30)
        assert failure is not None, "the new topic's records were skipped and nothing said"
        cause = failure if isinstance(failure, TopicResetError) else failure.__cause__
        assert isinstance(cause, TopicResetError), repr(failure)
        text = str(cause)
        assert f"pipeline {name}" in text
        assert f"topic {name} partition 0: mark at offset 4" in text
        assert "on_topic_reset: reset" in text
    # Nothing of the new topic was written, nothing skipped: the old rows, the old mark.
    assert await sql(url, f"select count(*) from {name}") == [(5,)]
    marks = await sql(url, 'select "offset" from eventpipe.sink_offsets where topic = %s', [name])
    assert marks == [(4,)]


async def test_with_on_topic_reset_a_topic_recreated_while_running_is_read_from_its_beginning(
    settings: Settings,
) -> None:
    name = ident("live")
    url = settings.database.url.get_secret_value()
    s = with_pipelines(settings, pipeline(name, on_topic_reset="reset"))
    await _first_life(s, name, url)
    async with running(s) as svc:
        async with Publisher(s) as pub:
            await pub.publish_batch(name, events(name, range(5), "old"))
        assert await wait_rows(url, f"select count(*) from {name}", 5) == 5
        await recreate_topic(s, name)
        async with Publisher(s) as pub:
            await pub.publish_batch(name, events(name, range(3), "new"))
        assert await wait_rows(url, f"select count(*) from {name}", 8) == 8
        async with Publisher(s) as pub:  # and it goes on from there
            await pub.publish_batch(name, events(name, range(3, 7), "new"))
        assert await wait_rows(url, f"select count(*) from {name}", 12) == 12
        assert svc.failure is None
    rows = await sql(url, f"select id from {name} where id like %s order by id", [f"{name}-new-%"])
    assert [r[0] for r in rows] == [f"{name}-new-{i}" for i in range(7)]
    marks = await sql(
        url,
        'select "offset", topic_id is not null from eventpipe.sink_offsets where topic = %s',
        [name],
    )
    assert marks == [(6, True)]


async def _seek(consumer: Any, offsets: dict[TopicPartition, int]) -> None:
    for tp, offset in offsets.items():
        consumer.seek(tp, offset)


async def test_a_redelivery_of_the_same_topic_is_still_dropped(settings: Settings) -> None:
    """The consumer sought back behind the reader's back (as a redelivery would):
    the broker says it is the same topic, so the records read again are dropped
    (not written twice), and the pipeline goes on without a new assignment."""
    name = ident("live")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (id text primary key, n int not null)")
    async with runtime(settings, pipeline(name)) as (rt, pub):
        reader = rt.reader
        assert reader is not None
        await pub.publish_batch(name, events(name, range(5), "old"))
        assert await wait_rows(url, f"select count(*) from {name}", 5) == 5
        epoch = reader.epoch
        await reader._call(_seek, {TopicPartition(name, 0): 1})
        for _ in range(200):  # 20 s
            if reader.redeliveries:
                break
            await asyncio.sleep(0.1)
        assert reader.redeliveries >= 1, "the fall-back was never checked"
        await pub.publish_batch(name, events(name, range(5, 7), "old"))
        assert await wait_rows(url, f"select count(*) from {name}", 7) == 7
        assert reader.epoch == epoch  # not established again
        assert rt.failure is None
        assert reader.positions.next[TP(name, 0)] == 7
    marks = await sql(url, 'select "offset" from eventpipe.sink_offsets where topic = %s', [name])
    assert marks == [(6,)]
