"""A source topic deleted and created again under its name while the postgres
sink's marks survive (what a restart of `make dev` does: the embedded broker
keeps topics in memory, .eventpipe/pg keeps the marks).  The new topic's records
are never skipped silently: by default the pipeline stops with an error naming
the topic, partition, mark, end offset and the option; with
``on_topic_reset: reset`` the marks are dropped and the new records written.
Both ways of telling: the topic id the mark was written under, and (for a mark
without one) the partition's end offset below the mark."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventpipe.envelope import CloudEvent
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.kafka.incarnation import TopicResetError
from eventpipe.publisher import Publisher
from eventpipe.service.runner import ComponentFailedError, Service, serve_until_signalled
from eventpipe.settings import Settings, TopicSpec
from tests.integration.test_pipeline_support import (
    ident,
    recreate_topic,
    running,
    sql,
    wait_rows,
    with_pipelines,
)


def pipeline(name: str, **source: Any) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"topics": [name], "partitions": 1, **source},
        "sinks": [{"postgres": {"table": name, "columns": {"id": ".id", "n": ".data.n"}}}],
    }


def events(name: str, ids: range, gen: str) -> list[CloudEvent]:
    return [CloudEvent.create("t", "/t", {"n": i}, id=f"{name}-{gen}-{i}") for i in ids]


@contextlib.asynccontextmanager
async def old_life(s: Settings, name: str, url: str) -> AsyncIterator[Service]:
    """The pipeline running, with 5 records written through it (mark 4)."""
    await sql(url, f"create table {name} (id text primary key, n int not null)")
    async with TopicAdmin(s.kafka) as ta:
        await ta.ensure_topics([TopicSpec(name=name, partitions=1)])
    async with running(s) as svc:
        async with Publisher(s) as pub:
            await pub.publish_batch(name, events(name, range(5), "old"))
        assert await wait_rows(url, f"select count(*) from {name}", 5) == 5
        yield svc


async def new_life(s: Settings, name: str) -> None:
    """The topic created again, with 3 new records (offsets 0..2, below the mark 4)."""
    await recreate_topic(s, name)
    async with Publisher(s) as pub:
        await pub.publish_batch(name, events(name, range(3), "new"))


async def first_life(s: Settings, name: str, url: str) -> None:
    """5 records written through the pipeline; once it stopped, the topic is
    created again with 3 new records."""
    async with old_life(s, name, url):
        pass
    await new_life(s, name)


async def goes_on_with_the_new_topic(
    s: Settings, svc: Service, name: str, rows: int, new: int, more: int
) -> None:
    """``rows`` rows (``new`` of the new topic) land, then ``more`` new records do
    too; after the service stops, :func:`new_topic_written` checks them."""
    url = s.database.url.get_secret_value()
    assert await wait_rows(url, f"select count(*) from {name}", rows) == rows
    async with Publisher(s) as pub:  # and it goes on from there
        await pub.publish_batch(name, events(name, range(new, new + more), "new"))
    assert await wait_rows(url, f"select count(*) from {name}", rows + more) == rows + more
    assert svc.failure is None


async def new_topic_written(url: str, name: str, new: int) -> None:
    """Records 0..new-1 of the new topic written, the mark at new-1 under its id."""
    rows = await sql(url, f"select id from {name} where id like %s order by id", [f"{name}-new-%"])
    assert [r[0] for r in rows] == [f"{name}-new-{i}" for i in range(new)]
    marks = await sql(
        url,
        'select "offset", topic_id is not null from eventpipe.sink_offsets where topic = %s',
        [name],
    )
    assert marks == [(new - 1, True)]


@pytest.mark.parametrize("told_by", ["topic id", "end offset"])
async def test_a_recreated_topic_stops_the_pipeline_by_default(
    settings: Settings, told_by: str
) -> None:
    name = ident("reset")
    url = settings.database.url.get_secret_value()
    s = with_pipelines(settings, pipeline(name))
    await first_life(s, name, url)
    if told_by == "end offset":  # a mark written before topic ids were kept
        await sql(url, "update eventpipe.sink_offsets set topic_id = null where topic = %s", [name])

    with pytest.raises(ComponentFailedError) as info:
        await asyncio.wait_for(serve_until_signalled(Service(s, "pipelines")), 40)
    cause = info.value.__cause__
    assert isinstance(cause, TopicResetError)
    text = str(cause)
    assert f"pipeline {name}" in text
    assert f"topic {name} partition 0: mark at offset 4, end offset 3" in text
    assert "on_topic_reset: reset" in text
    if told_by == "topic id":
        assert "the topic's id is" in text
    # Nothing was written or skipped: the old rows, the old mark.
    assert await sql(url, f"select count(*) from {name}") == [(5,)]
    marks = await sql(url, 'select "offset" from eventpipe.sink_offsets where topic = %s', [name])
    assert marks == [(4,)]


@pytest.mark.parametrize("told_by", ["topic id", "end offset"])
async def test_with_on_topic_reset_the_new_topic_is_read_from_its_beginning(
    settings: Settings, told_by: str
) -> None:
    name = ident("reset")
    url = settings.database.url.get_secret_value()
    await first_life(with_pipelines(settings, pipeline(name)), name, url)
    if told_by == "end offset":
        await sql(url, "update eventpipe.sink_offsets set topic_id = null where topic = %s", [name])

    s = with_pipelines(settings, pipeline(name, on_topic_reset="reset"))
    async with running(s) as svc:
        await goes_on_with_the_new_topic(s, svc, name, rows=8, new=3, more=2)
    await new_topic_written(url, name, 5)
