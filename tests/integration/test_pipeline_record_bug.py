"""A pipeline dead-letters a record only when a class says its data is bad (a decode
error, a jq runtime error: eventpipe.errors.is_bad_record).  An error no class
explains while decoding or transforming one record (a bug) stops the pipeline
(exit 3) with the batch unacknowledged, instead of dead-lettering that good
record: restarted without the bug, every record is delivered, none dead-lettered."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventpipe.cli.common import report
from eventpipe.envelope import CloudEvent
from eventpipe.pipelines import batch
from eventpipe.publisher import Publisher
from eventpipe.service.runner import ComponentFailedError, Service, serve_until_signalled
from eventpipe.settings import Settings
from eventpipe.transforms import Chain
from tests.helpers import read_records
from tests.integration.test_pipeline_support import (
    dlq_headers,
    ident,
    running,
    sql,
    wait_rows,
    with_pipelines,
)

N = 10


class Bug(Exception):
    """A class nothing classifies: what a bug in our own code raises."""


async def _pipeline(settings: Settings, prefix: str, jq: str) -> tuple[str, str, Settings]:
    name = ident(prefix)
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (id text primary key, n int not null)")
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "steps": [{"jq": jq}],
        "sinks": [{"postgres": {"table": name, "columns": {"id": ".data.id", "n": ".data.n"}}}],
    }
    s = with_pipelines(settings, pipeline)
    events = [
        CloudEvent.create("t", "/t", {"id": f"r-{i}", "n": i}, id=f"e-{i}", partitionkey="k")
        for i in range(N)
    ]
    async with Publisher(s) as pub:
        await pub.publish_batch(name, events)
    return name, url, s


def _decode_bug(real: Any) -> Any:
    def from_kafka(key: Any, value: Any, headers: Any) -> CloudEvent:
        ev = real(key, value, headers)
        if ev.id == "e-3":
            raise Bug("a bug decoding e-3")
        return ev

    return from_kafka


def _step_bug(real: Any) -> Any:
    def process(self: Chain, event: CloudEvent) -> list[CloudEvent]:
        if event.id == "e-3":
            raise Bug("a bug transforming e-3")
        return real(self, event)

    return process


@pytest.mark.parametrize("where", ["decode", "step"])
async def test_a_bug_on_one_record_stops_the_pipeline_and_dead_letters_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    name, url, s = await _pipeline(settings, "recbug", "{id: .id, n: .n}")
    if where == "decode":
        real: Any = batch.from_kafka
        monkeypatch.setattr(batch, "from_kafka", _decode_bug(real))
    else:
        real = Chain.process
        monkeypatch.setattr(Chain, "process", _step_bug(real))
    with pytest.raises(ComponentFailedError) as info:
        await asyncio.wait_for(serve_until_signalled(Service(s, "pipelines")), 50)
    assert isinstance(info.value.__cause__, Bug), info.value
    assert report(info.value) == 3
    assert await read_records(s.kafka.bootstrap, f"{name}.dlq", 0, 1.0) == []

    if where == "decode":  # the bug fixed: every record delivered, none dead-lettered
        monkeypatch.setattr(batch, "from_kafka", real)
    else:
        monkeypatch.setattr(Chain, "process", real)
    async with running(s):
        assert await wait_rows(url, f"select count(*) from {name}", N) == N
    assert await sql(url, f"select count(distinct id) from {name}") == [(N,)]
    assert await read_records(s.kafka.bootstrap, f"{name}.dlq", 0, 1.0) == []


async def test_a_jq_runtime_error_dead_letters_its_record_alone(settings: Settings) -> None:
    jq = 'if .n == 3 then error("n must not be 3") else {id: .id, n: .n} end'
    name, url, s = await _pipeline(settings, "recbad", jq)
    async with running(s):
        assert await wait_rows(url, f"select count(*) from {name}", N - 1) == N - 1
        dead = await read_records(s.kafka.bootstrap, f"{name}.dlq", 1)
    [letter] = dead
    h = dlq_headers(letter)
    assert h["eventpipe.dlq.stage"] == "transform", h
    assert h["eventpipe.dlq.exception.class"].endswith("TransformError"), h
    assert dict(letter.headers)["ce_id"] == b"e-3"
    assert await sql(url, f"select id from {name} where n = 3") == []
