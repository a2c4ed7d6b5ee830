"""A sink that fails a batch with an error that is not classified as a bad record
(a bug): Kafka Connect's ``errors.tolerance: none`` by default -- the pipeline
stops (the service exits 3), nothing is dead-lettered, nothing is acknowledged,
and the restarted pipeline delivers every record.  ``errors: {tolerance: all}``
dead-letters the batch instead."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from eventpipe.cli.common import report
from eventpipe.connectors.sinks.postgres import PostgresSink
from eventpipe.envelope import CloudEvent
from eventpipe.errors import PermanentError
from eventpipe.pipelines.batch import SinkFailedError
from eventpipe.publisher import Publisher
from eventpipe.service.catalog import CATALOG
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
from tests.plugins import example_sink


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


# ----------------------------------------------- one record's error from a sink
# A sink that names one record's error (``deliver``'s index -> exception; an
# exactly-once sink hands them to ``before_commit`` inside its transaction) is
# held to the same rule: dead-lettered only when a class says the record is bad
# (errors.is_bad_record); an error no class explains stops the pipeline unless
# ``errors.tolerance: all``.  ``postgres``: the exactly-once path (before_commit);
# ``audit_rows`` (tests/plugins/example_sink.py): an at-least-once sink.


class Bug(Exception):
    """A class nothing classifies: what a bug in a sink raises."""


class BadRow(PermanentError):
    """A class that says the record's data is bad for good."""


SINKS = ["postgres", "audit_rows"]
WITH_EXAMPLE = dataclasses.replace(
    CATALOG, sinks={**CATALOG.sinks, "audit_rows": example_sink.PLUGIN}
)
BAD = 2  # events(name, n)[BAD] meets the error


async def _record_pipeline(
    settings: Settings, sink: str, prefix: str, **extra: Any
) -> tuple[str, str, Settings]:
    name = ident(prefix)
    url = settings.database.url.get_secret_value()
    if sink == "postgres":
        await sql(url, f"create table {name} (id text primary key, n int not null)")
        s = with_pipelines(settings, pipeline(name, **extra))
    else:
        await sql(
            url,
            f"create table {name} (event_id text primary key, type text not null, "
            "source text not null, data jsonb)",
        )
        spec = {**pipeline(name, **extra), "sinks": [{"audit_rows": {"table": name}}]}
        s = settings.model_copy(update={"pipelines": [spec]})
    async with Publisher(s) as pub:
        await pub.publish_batch(name, events(name, 5))
    return name, url, s


def fail_one_record(
    monkeypatch: pytest.MonkeyPatch, sink: str, name: str, exc: BaseException
) -> list[str]:
    """The sink reports ``exc`` for event ``BAD`` (and writes the others)."""
    bad_id = f"{name}-{BAD}"
    calls: list[str] = []
    if sink == "postgres":
        real_check = PostgresSink._check_items

        def check_items(
            self: PostgresSink, items: Sequence[DeliveryItem], failed: dict[int, BaseException]
        ) -> None:
            real_check(self, items, failed)
            for it in items:
                if it.events and it.events[0].id == bad_id:
                    calls.append(bad_id)
                    failed[it.index] = exc

        monkeypatch.setattr(PostgresSink, "_check_items", check_items)
        return calls
    real_deliver = example_sink.AuditRowsSink.deliver

    async def deliver(
        self: example_sink.AuditRowsSink, items: Sequence[DeliveryItem], **kw: Any
    ) -> dict[int, BaseException]:
        bad = [it for it in items if it.events and it.events[0].id == bad_id]
        calls.extend(bad_id for _ in bad)
        failed = await real_deliver(self, [it for it in items if it not in bad], **kw)
        return {**failed, **{it.index: exc for it in bad}}

    monkeypatch.setattr(example_sink.AuditRowsSink, "deliver", deliver)
    return calls


@pytest.mark.parametrize("sink", SINKS)
async def test_an_unclassified_error_for_one_record_stops_the_pipeline(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, sink: str
) -> None:
    name, url, s = await _record_pipeline(settings, sink, "recsinkbug")
    calls = fail_one_record(monkeypatch, sink, name, Bug("a bug in the sink's row for r-2"))
    with pytest.raises(ComponentFailedError) as info:
        await asyncio.wait_for(
            serve_until_signalled(Service(s, "pipelines", catalog=WITH_EXAMPLE)), 40
        )
    assert calls, "the sink never met the record"
    assert report(info.value) == 3
    cause = info.value.__cause__
    assert isinstance(cause, SinkFailedError), repr(cause)
    assert isinstance(cause.__cause__, Bug), repr(cause.__cause__)
    assert "errors.tolerance" in str(cause), str(cause)
    named = re.search(rf"record {name}\[\d+\]@{BAD} ", str(cause))  # keyless: one partition
    assert named, str(cause)
    assert await read_records(s.kafka.bootstrap, f"{name}.dlq", 0, 1.0) == []

    monkeypatch.undo()  # the bug fixed: every record is delivered, none dead-lettered
    svc = Service(s, "pipelines", catalog=WITH_EXAMPLE)
    await svc.start()
    try:
        assert await wait_rows(url, f"select count(*) from {name}", 5) == 5
    finally:
        await svc.stop()
    assert await read_records(s.kafka.bootstrap, f"{name}.dlq", 0, 1.0) == []


@pytest.mark.parametrize("sink", SINKS)
@pytest.mark.parametrize("case", ["bad-record", "tolerance-all"])
async def test_one_records_error_is_dead_lettered_when_bad_or_tolerated(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, sink: str, case: str
) -> None:
    extra = {"errors": {"tolerance": "all"}} if case == "tolerance-all" else {}
    name, url, s = await _record_pipeline(settings, sink, "recsinkdl", **extra)
    exc = BadRow("r-2 is bad for good") if case == "bad-record" else Bug("a bug for r-2")
    fail_one_record(monkeypatch, sink, name, exc)
    svc = Service(s, "pipelines", catalog=WITH_EXAMPLE)
    await svc.start()
    try:
        [letter] = await read_records(s.kafka.bootstrap, f"{name}.dlq", 1, timeout=30)
        assert await wait_rows(url, f"select count(*) from {name}", 4) == 4
        assert svc.failure is None
    finally:
        await svc.stop()
    h = dlq_headers(letter)
    assert h["eventpipe.dlq.stage"] == "sink", h
    assert h["eventpipe.dlq.exception.class"].endswith(type(exc).__name__), h
    assert dict(letter.headers)["ce_id"] == f"{name}-{BAD}".encode()
    assert await sql(url, f"select count(*) from {name}") == [(4,)]
