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
import contextlib
from collections.abc import AsyncIterator

from aiokafka.structs import TopicPartition
from faust.types import TP

from eventpipe.kafka.incarnation import TopicResetError
from eventpipe.pipelines.partition_reader import _seek
from eventpipe.service.runner import Service
from eventpipe.settings import Settings
from tests.integration.test_pipeline_support import (
    ident,
    runtime,
    sql,
    wait_rows,
    with_pipelines,
)
from tests.integration.test_pipeline_topic_reset import (
    events,
    goes_on_with_the_new_topic,
    new_life,
    new_topic_written,
    old_life,
    pipeline,
)


@contextlib.asynccontextmanager
async def recreated_while_running(s: Settings, name: str, url: str) -> AsyncIterator[Service]:
    """The pipeline running, 5 records written through it (mark 4); then, while it
    runs, its topic is created again and gets 3 records (offsets 0..2)."""
    async with old_life(s, name, url) as svc:
        await new_life(s, name)
        yield svc


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
    async with recreated_while_running(s, name, url) as svc:
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
    async with recreated_while_running(s, name, url) as svc:
        await goes_on_with_the_new_topic(s, svc, name, rows=8, new=3, more=4)
    await new_topic_written(url, name, 7)


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
