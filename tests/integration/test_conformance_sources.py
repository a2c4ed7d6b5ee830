"""The source conformance suite: the same cases against every source of the catalog
(tests/conformance/profiles.py), on the test's real broker and PostgreSQL, through
the plugin surface only (``Plugin.build(config, name, ctx)``, ``start`` / ``stop``,
``health``, ``status``, and ``routes`` served by the service's own app).

* start and stop: the profile's entry is valid and passes the plugin's checks;
  ``health()`` and ``/readyz`` say ok while it runs; ``stop`` is idempotent (and a
  no-op before ``start``), nothing is left open (no task left running, no
  ResourceWarning);
* events reach the topic: one event per input, as CloudEvents;
* a restart resumes: input made while one instance stops and while none runs
  reaches the topic through a new instance with the same config; none is lost, and
  an input seen twice is the same event (same id, same data) sent again;
* status reported: events out, and the input the source dead-letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from eventpipe.context import Context
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import from_kafka
from eventpipe.plugin import Component, Plugin
from eventpipe.preflight import Reach
from eventpipe.service.app import build_app
from eventpipe.settings import Settings
from tests.conformance.base import Running, SourceProfile
from tests.conformance.profiles import SOURCE_CASES, prepared, suite_context
from tests.helpers import (
    Records,
    ServiceTestServer,
    read_records,
    released,
    tasks_left,
    wait_for,
)
from tests.integration.test_pipeline_support import dlq_headers

N = 6


@dataclass
class SourceUnderTest:
    plugin: Plugin[Any, Context, Component]
    profile: SourceProfile
    ctx: Context
    entry: dict[str, Any]  # the ``sources:`` entry, as YAML holds it

    @property
    def name(self) -> str:
        return str(self.entry["name"])

    def config(self) -> Any:
        return self.plugin.config.model_validate(self.entry)

    def build(self) -> Component:
        return self.plugin.build(self.config(), self.name, self.ctx)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Running]:
        """A new instance, started as the service starts it, its routes served; the
        HTTP server drained before the source stops, as the service does."""
        source = self.build()
        await source.start()
        try:
            app = build_app(self.ctx, components=[source])
            client = TestClient(ServiceTestServer(app, self.ctx.settings.service))
            await client.start_server()
            try:
                await wait_for(lambda: source.status().state == "running", source.status)
                await self.profile.ready(source)
                yield Running(source, client)
            finally:
                await client.close()
        finally:
            await source.stop()

    async def events(self, labels: Sequence[str]) -> list[CloudEvent]:
        """Every event on the source's topic, once each label's arrived."""
        wanted = set(labels)

        def arrived(records: Records) -> bool:
            return wanted <= {self.profile.label_of(e) for e in decode(records)}

        topic = self.profile.topic
        records = await read_records(self.ctx.settings.kafka.bootstrap, topic, 0, 30, until=arrived)
        return decode(records)


def decode(records: Records) -> list[CloudEvent]:
    return [from_kafka(r.key, r.value, list(r.headers)) for r in records]


@pytest.fixture(params=SOURCE_CASES)
async def sut(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[SourceUnderTest]:
    plugin = request.param[0]
    async with prepared(request.param, settings) as (profile, made, ctx):
        entry = {"type": plugin.type, "name": profile.name, **made}
        yield SourceUnderTest(plugin, profile, ctx, entry)


def by_label(sut: SourceUnderTest, events: Sequence[CloudEvent]) -> dict[str, list[CloudEvent]]:
    """The events of each input; an input sent twice is the same event (id, data)."""
    out: dict[str, list[CloudEvent]] = defaultdict(list)
    for e in events:
        out[sut.profile.label_of(e)].append(e)
    for label, sent in out.items():
        assert {(e.id, orjson.dumps(e.data)) for e in sent} == {
            (sent[0].id, orjson.dumps(sent[0].data))
        }, f"input {label} became different events: {sent}"
    assert len({sent[0].id for sent in out.values()}) == len(out), "two inputs share an id"
    return out


async def test_start_and_stop(sut: SourceUnderTest) -> None:
    config = sut.config()
    if sut.plugin.check is not None:
        reach = Reach(sut.ctx.settings, sut.ctx.admin, sut.ctx.pool)
        assert await sut.plugin.check(config, reach) == []
    before = asyncio.all_tasks()
    async with suite_context(sut.profile) as ctx:  # its own: what runs on after is the source's
        own = dataclasses.replace(sut, ctx=ctx)
        never = own.build()
        await never.stop()  # stopping what never started does nothing
        async with own.running() as r:
            source = r.source
            assert (source.kind, source.type_name, source.name) == (
                "source",
                sut.plugin.type,
                sut.name,
            )
            st = source.status()
            assert (st.name, st.kind, st.type, st.state) == (
                sut.name,
                "source",
                sut.plugin.type,
                "running",
            )
            assert source.health() == "ok"
            ready = await r.client.get("/readyz")
            assert (await ready.json())["checks"][source.check_name] == "ok"
        await source.stop()  # idempotent
        assert source.status().state == "stopped"
    assert await tasks_left(before) == []
    left = [source, never]
    del source, never, r, own
    assert released(left) == []


async def test_events_reach_the_topic(sut: SourceUnderTest) -> None:
    labels = [f"a{i}" for i in range(N)]
    async with sut.running() as r:
        await sut.profile.make_input(r, labels)
        events = await sut.events(labels)
    assert sorted(by_label(sut, events)) == sorted(labels)
    assert all(e.source and e.type for e in events)


async def test_a_restart_resumes(sut: SourceUnderTest) -> None:
    before, at_stop, stopped = (
        [f"{p}{i}" for i in range(N)] for p in ("before", "at-stop", "stopped")
    )
    async with sut.running() as r:
        await sut.profile.make_input(r, before)
        await sut.events(before)
        await sut.profile.make_input(r, at_stop)  # then stopped at once: maybe in flight
    if sut.profile.input_while_stopped:
        await sut.profile.make_input(None, stopped)
    async with sut.running() as r:
        if not sut.profile.input_while_stopped:
            await sut.profile.make_input(r, stopped)
        events = await sut.events(before + at_stop + stopped)
    assert sorted(by_label(sut, events)) == sorted(before + at_stop + stopped)


async def test_status_reported(sut: SourceUnderTest) -> None:
    labels = [f"a{i}" for i in range(N)]
    async with sut.running() as r:
        source = r.source
        await sut.profile.make_input(r, labels)
        await sut.events(labels)
        dlq = await sut.profile.make_bad_input(r)
        bootstrap = sut.ctx.settings.kafka.bootstrap
        letters = [] if dlq is None else await read_records(bootstrap, dlq, 1)

        def counted() -> bool:
            st = source.status()
            return st.total_out >= N and sum(st.dead_letters.values()) == len(letters)

        await wait_for(counted, source.status)
        st = source.status()
    assert (st.name, st.kind, st.type, st.state) == (sut.name, "source", sut.plugin.type, "running")
    assert st.total_out == N, st
    assert st.rate_out > 0
    assert st.last_error is None, st.last_error
    if dlq is None:
        assert st.dead_letters == {}
    else:
        [letter] = letters
        stage = dlq_headers(letter)["eventpipe.dlq.stage"]
        assert st.dead_letters == {stage: 1}
    assert orjson.loads(orjson.dumps(st.to_dict()))["total_out"] == N
    assert source.status().state == "stopped"
