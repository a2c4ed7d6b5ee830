"""The "write your own sink" example (tests/plugins/example_sink.py) in a running
service composed with one more sink than the built-in catalog: its rows arrive
once, a row PostgreSQL refuses is dead-lettered alone, a missing table is found
before anything starts, and the built-in catalog does not know the sink."""

from __future__ import annotations

import dataclasses

import pytest

from eventpipe.envelope import CloudEvent
from eventpipe.errors import ConfigError
from eventpipe.pipelines.component import PipelineComponent
from eventpipe.publisher import Publisher
from eventpipe.service.catalog import CATALOG
from eventpipe.service.runner import Service
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.test_pipeline_support import dlq_headers, ident, sql, wait_rows
from tests.plugins import example_sink

WITH_EXAMPLE = dataclasses.replace(
    CATALOG, sinks={**CATALOG.sinks, "audit_rows": example_sink.PLUGIN}
)


def _settings(settings: Settings, name: str, table: str) -> Settings:
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 2},
        "sinks": [{"audit_rows": {"table": table}}],
        "retry": {"max_attempts": 2, "initial": "10ms", "max": "50ms"},
    }
    return settings.model_copy(update={"pipelines": [pipeline]})


async def test_the_example_sink_in_a_service(settings: Settings) -> None:
    name = ident("audit")
    url = settings.database.url.get_secret_value()
    await sql(
        url,
        f"create table {name} (event_id text primary key, "
        "type text not null check (length(type) < 20), source text not null, data jsonb)",
    )
    s = _settings(settings, name, f"public.{name}")
    with pytest.raises(ConfigError, match="unknown sink 'audit_rows'"):
        Service(s, "pipelines")  # not in the built-in catalog
    events = [CloudEvent.create("audit.seen", "/t", {"n": i}, id=f"a-{i}") for i in range(10)]
    too_long = CloudEvent.create("audit." + "x" * 30, "/t", {"n": 99}, id="a-long")
    svc = Service(s, "pipelines", catalog=WITH_EXAMPLE)
    await svc.start()
    try:
        async with Publisher(s) as pub:
            await pub.publish_batch(name, [*events[:5], too_long, *events[5:], events[0]])
        assert await wait_rows(url, f"select count(*) from {name}", 10) == 10
        [letter] = await read_records(s.kafka.bootstrap, f"{name}.dlq", 1, timeout=30)
        [comp] = [c for c in svc.components if isinstance(c, PipelineComponent)]
        [sink] = comp.status().children
    finally:
        await svc.stop()
    rows = await sql(url, f"select event_id, type, data from {name} order by event_id")
    assert [r[0] for r in rows] == sorted(f"a-{i}" for i in range(10))  # a-0 once
    assert rows[0][1:] == ("audit.seen", {"n": 0})
    h = dlq_headers(letter)
    assert h["eventpipe.dlq.stage"] == "sink" and h["eventpipe.dlq.step"] == "audit_rows"
    assert h["eventpipe.dlq.exception.class"] == "tests.plugins.example_sink.RowRefusedError"
    assert (sink.type, sink.dead_letters) == ("audit_rows", {"sink": 1})


async def test_a_missing_table_is_found_before_anything_starts(settings: Settings) -> None:
    name = ident("audit")
    s = _settings(settings, name, f"public.{name}_missing")
    with pytest.raises(ConfigError) as info:
        await Service(s, "pipelines", catalog=WITH_EXAMPLE).start()
    assert dict(info.value.problems) == {
        "pipelines[0].sinks[0].audit_rows.table": f"table public.{name}_missing does not exist"
    }
