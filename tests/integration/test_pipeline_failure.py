"""A pipeline whose batch fails on an unexpected error (a bug, not a bad record)
stops the service loudly instead of idling: ``serve_until_signalled`` raises
ComponentFailedError (``eventpipe run`` exits 3, so a supervisor restarts it),
and the batch stays uncommitted, so the restarted pipeline delivers it."""

from __future__ import annotations

import asyncio

import pytest

from eventpipe.cli.common import report
from eventpipe.envelope import CloudEvent
from eventpipe.pipelines.changelog import ChangelogWrites
from eventpipe.publisher import Publisher
from eventpipe.service.runner import ComponentFailedError, Service, serve_until_signalled
from eventpipe.settings import Settings
from tests.integration.test_pipeline_support import ident, running, sql, wait_rows, with_pipelines


async def test_unexpected_error_stops_the_service_and_nothing_is_lost(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = ident("crashy")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (id text primary key, n int not null)")
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 2},
        "steps": [{"jq": "{id: .id, n: .n}"}],
        "sinks": [{"postgres": {"table": name, "columns": {"id": ".data.id", "n": ".data.n"}}}],
    }
    s = with_pipelines(settings, pipeline)
    events = [
        CloudEvent.create("t", "/t", {"id": f"r-{i}", "n": i}, id=f"e-{i}", partitionkey=f"k{i}")
        for i in range(50)
    ]
    async with Publisher(s) as pub:
        await pub.publish_batch(name, events)

    calls = 0
    real_send = ChangelogWrites.send

    async def broken_send(self: ChangelogWrites, pending: object) -> None:
        nonlocal calls
        calls += 1
        raise TypeError("a bug in the changelog flush")

    monkeypatch.setattr(ChangelogWrites, "send", broken_send)
    with pytest.raises(ComponentFailedError) as info:
        await asyncio.wait_for(serve_until_signalled(Service(s, "pipelines")), 60)
    assert calls >= 1
    assert f"pipeline {name}" in str(info.value)
    assert "TypeError: a bug in the changelog flush" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)
    assert report(info.value) == 3  # what `eventpipe run` exits with

    # Restarted without the bug, every event is there once: the failed batch's
    # offsets were never committed.
    monkeypatch.setattr(ChangelogWrites, "send", real_send)
    async with running(s):
        assert await wait_rows(url, f"select count(*) from {name}", 50) == 50
    rows = await sql(url, f"select count(distinct id), sum(n) from {name}")
    assert rows == [(50, sum(range(50)))]
