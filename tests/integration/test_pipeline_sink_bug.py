"""A sink that fails a batch with an error that is not classified as a bad record
(a bug): Kafka Connect's ``errors.tolerance: none`` by default -- the pipeline
stops (the service exits 3), nothing is dead-lettered, nothing is acknowledged,
and the restarted pipeline delivers every record.  ``errors: {tolerance: all}``
dead-letters the batch instead."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from eventpipe.cli.common import report
from eventpipe.connectors.sinks.postgres import PostgresSink
from eventpipe.envelope import CloudEvent
from eventpipe.publisher import Publisher
from eventpipe.service.runner import ComponentFailedError, Service, serve_until_signalled
from eventpipe.settings import Settings
from eventpipe.sink import DeliveryItem
from tests.helpers import read_records
from tests.integration.test_pipeline_support import (
    dlq_headers,
    ident,
    running,
    sql,
    wait_rows,
    with_pipelines,
)


def pipeline(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "sinks": [{"postgres": {"table": name, "columns": {"id": ".data.id", "n": ".data.n"}}}],
        "retry": {"max_attempts": 2, "initial": "10ms", "max": "50ms"},
        **extra,
    }


def events(name: str, n: int) -> list[CloudEvent]:
    return [
        CloudEvent.create("t", "/t", {"id": f"r-{i}", "n": i}, id=f"{name}-{i}") for i in range(n)
    ]


def break_the_sink(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    async def buggy(
        self: PostgresSink,
        conn: psycopg.AsyncConnection[Any],
        items: Sequence[DeliveryItem],
        failed: dict[int, BaseException],
    ) -> None:
        calls.append(len(items))
        raise AttributeError("'NoneType' object has no attribute 'rows' (a sink bug)")

    monkeypatch.setattr(PostgresSink, "_also_write", buggy)
    return calls


async def test_an_unclassified_sink_error_stops_the_pipeline_and_nothing_is_dead_lettered(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = ident("sinkbug")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (id text primary key, n int not null)")
    s = with_pipelines(settings, pipeline(name))
    async with Publisher(s) as pub:
        await pub.publish_batch(name, events(name, 20))

    real = PostgresSink._also_write
    calls = break_the_sink(monkeypatch)
    with pytest.raises(ComponentFailedError) as info:
        await asyncio.wait_for(serve_until_signalled(Service(s, "pipelines")), 40)
    assert calls, "the sink was never called"
    assert report(info.value) == 3
    message = str(info.value)
    assert f"pipeline {name}" in message and "AttributeError" in message
    assert "errors.tolerance" in str(info.value.__cause__)
    assert await read_records(s.kafka.bootstrap, f"{name}.dlq", 1, timeout=3) == []

    # Fixed and restarted: every record is delivered (nothing was acknowledged).
    monkeypatch.setattr(PostgresSink, "_also_write", real)
    async with running(s):
        assert await wait_rows(url, f"select count(*) from {name}", 20) == 20
    assert await sql(url, f"select count(distinct id), sum(n) from {name}") == [
        (20, sum(range(20)))
    ]


async def test_with_tolerance_all_the_batch_is_dead_lettered_and_the_pipeline_goes_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = ident("sinkbugall")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (id text primary key, n int not null)")
    s = with_pipelines(settings, pipeline(name, errors={"tolerance": "all"}))
    async with Publisher(s) as pub:
        await pub.publish_batch(name, events(name, 5))

    break_the_sink(monkeypatch)
    async with running(s) as svc:
        letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 5, timeout=30)
        assert svc.failure is None
    assert len(letters) == 5
    for letter in letters:
        h = dlq_headers(letter)
        assert h["eventpipe.dlq.stage"] == "sink"
        assert h["eventpipe.dlq.exception.class"] == "builtins.AttributeError"
    assert await sql(url, f"select count(*) from {name}") == [(0,)]
