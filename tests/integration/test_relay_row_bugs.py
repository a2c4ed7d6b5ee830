"""A relay turns each row into a record on its own, and a row it cannot turn into
one is a dead letter, but only when a class says the row's data is bad
(eventpipe.errors.classify, record=True).  An error no class explains while
routing or encoding a row (a bug) stops the relay instead (state failed,
on_failure: the service exits 3): the row and those after it are not
dead-lettered, deleted or passed by the slot, and a relay restarted without the
bug publishes them all (test_relay_failure covers a bug while publishing)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from eventpipe.connectors.outbox.router import OutboxRouter
from eventpipe.connectors.postgres_cdc.events import EventBuilder, UnencodableRowError
from eventpipe.connectors.postgres_cdc.lsn import parse_lsn
from eventpipe.connectors.postgres_cdc.source import PostgresCdcSource
from eventpipe.plugin import Component
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.test_cdc_support import (
    cdc_source,
    execute,
    fetch,
    flush_lsn,
    pg,
    slot_row,
    unique,
    wait_active,
)
from tests.integration.test_outbox_relay import make_outbox, relay, wait_empty


class Bug(Exception):
    """A class nothing classifies: what a bug in our own code raises."""


async def wait_failed(failures: list[BaseException], within_s: float = 20) -> None:
    for _ in range(int(within_s / 0.05)):
        if failures:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the relay did not stop within {within_s}s on the bug")


def watch(component: Component) -> list[BaseException]:
    failures: list[BaseException] = []
    component.on_failure = lambda _comp, exc: failures.append(exc)
    return failures


# ------------------------------------------------------------------ outbox
OUTBOX_CASES = ["poll", "cdc-startup", "cdc-stream"]


async def _outbox_rows(settings: Settings, table: str, name: str, bad: str | None) -> list[str]:
    """Rows 0..3 of aggregate k<i>; ``bad``: row 2's headers instead."""
    ids = [f"{name}-{i}" for i in range(4)]
    async with await pg(settings) as conn, conn.transaction():
        for i, event_id in enumerate(ids):
            headers = bad if (bad is not None and i == 2) else "{}"
            await conn.execute(
                f"insert into {table} (id, aggregatetype, aggregateid, type, payload, headers)"
                " values (%s, 'item', %s, 't.row', %s, %s)",
                (event_id, f"k{i}", orjson.dumps({"n": i}).decode(), headers),
            )
    return ids


def _buggy_route(real: Any) -> Any:
    def route(self: OutboxRouter, row: Mapping[str, Any]) -> Any:
        if row["aggregateid"] == "k2":
            raise Bug("a bug in routing row k2")
        return real(self, row)

    return route


@pytest.mark.parametrize("case", OUTBOX_CASES)
async def test_an_outbox_routing_bug_stops_the_relay_and_dead_letters_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    table = await make_outbox(settings)
    name = unique("obrow")
    mode = case.partition("-")[0]
    topic, dlq = f"{name}.item", f"{name}.dlq"
    config = {
        "mode": mode,
        "table": table,
        "topic": name + ".{aggregatetype}",
        "dlq_topic": dlq,
    }
    real = OutboxRouter.route
    monkeypatch.setattr(OutboxRouter, "route", _buggy_route(real))
    if case != "cdc-stream":
        ids = await _outbox_rows(settings, table, name, None)
    async with relay(settings, **config) as r:
        failures = watch(r)
        if case == "cdc-stream":
            assert isinstance(r.impl, PostgresCdcSource)
            await wait_active(r.impl)
            ids = await _outbox_rows(settings, table, name, None)
        await wait_failed(failures)
        st = r.status()
    assert [type(f) for f in failures] == [Bug], failures
    assert st.state == "failed" and st.last_error is not None, st
    assert st.last_error.error_class.endswith("Bug"), st.last_error
    assert not st.dead_letters, st.dead_letters
    # nothing deleted: the good rows with the one that met the bug
    assert await fetch(settings, f"select count(*) from {table}") == [(4,)]
    assert await read_records(settings.kafka.bootstrap, dlq, 0, 1.0) == []

    monkeypatch.setattr(OutboxRouter, "route", real)  # the bug fixed: all of them go out
    async with relay(settings, **config):
        await wait_empty(settings, table)
        recs = await read_records(settings.kafka.bootstrap, topic, 4)
    got = [dict(rec.headers)["ce_id"].decode() for rec in recs]
    assert sorted(got) == sorted(ids) and len(got) == len(set(got)), got
    assert await read_records(settings.kafka.bootstrap, dlq, 0, 1.0) == []


@pytest.mark.parametrize("case", OUTBOX_CASES)
async def test_an_outbox_row_with_bad_data_is_dead_lettered_alone(
    settings: Settings, case: str
) -> None:
    table = await make_outbox(settings)
    name = unique("obbad")
    mode = case.partition("-")[0]
    topic, dlq = f"{name}.item", f"{name}.dlq"
    bad = orjson.dumps({"ce_time": "yesterday"}).decode()  # InvalidEventError: bad data
    if case != "cdc-stream":
        ids = await _outbox_rows(settings, table, name, bad)
    async with relay(
        settings, mode=mode, table=table, topic=name + ".{aggregatetype}", dlq_topic=dlq
    ) as r:
        failures = watch(r)
        if case == "cdc-stream":
            assert isinstance(r.impl, PostgresCdcSource)
            await wait_active(r.impl)
            ids = await _outbox_rows(settings, table, name, bad)
        await wait_empty(settings, table)
        recs = await read_records(settings.kafka.bootstrap, topic, 3)
        dead = await read_records(settings.kafka.bootstrap, dlq, 1)
        st = r.status()
    assert failures == [] and st.state != "failed", st
    assert sorted(dict(rec.headers)["ce_id"].decode() for rec in recs) == [
        ids[0],
        ids[1],
        ids[3],
    ]
    [letter] = dead
    headers = dict(letter.headers)
    assert ids[2].encode() in letter.value  # the row (cdc-stream: as its change's columns)
    assert headers["eventpipe.dlq.exception.class"].endswith(b"InvalidEventError"), headers


# --------------------------------------------------------------------- cdc
def _change_raising(real: Any, exc: Exception) -> Any:
    def change(
        self: EventBuilder, t: Any, op: str, before: Any, after: Any, *a: Any, **kw: Any
    ) -> Any:
        if after is not None and after.get("id") == 2:
            raise exc
        return real(self, t, op, before, after, *a, **kw)

    return change


CDC_CASES = ["stream", "snapshot"]


async def _cdc_rows(settings: Settings, t: str) -> None:
    await execute(
        settings, f"insert into public.{t} select g, 'v' || g from generate_series(1, 3) g"
    )


async def _cdc_table(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, case: str, raising: Exception
) -> tuple[str, str]:
    """A table whose row 2 meets ``raising`` when encoded (rows written first when
    ``case`` is snapshot).  Returns the table and the source's snapshot mode."""
    t = unique("cdcrow")
    await execute(settings, f"create table public.{t} (id int primary key, v text)")
    monkeypatch.setattr(EventBuilder, "change", _change_raising(EventBuilder.change, raising))
    if case == "snapshot":
        await _cdc_rows(settings, t)
    return t, "initial" if case == "snapshot" else "never"


@pytest.mark.parametrize("case", CDC_CASES)
async def test_a_cdc_encoding_bug_stops_the_reader_and_the_slot_stays(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    real = EventBuilder.change
    t, snapshot = await _cdc_table(settings, monkeypatch, case, Bug("a bug in encoding"))
    async with cdc_source(settings, tables=[f"public.{t}"], snapshot=snapshot, wait=False) as src:
        failures = watch(src)
        if case == "stream":
            await wait_active(src)
            await _cdc_rows(settings, t)
        written = await flush_lsn(settings)
        await wait_failed(failures)
        st = src.status()
        dlq, topic = f"{src.name}.dlq", f"{src.name}.public.{t}"
        assert [type(f) for f in failures] == [Bug], failures
        assert st.state == "failed" and not st.dead_letters, st
        if case == "stream":  # snapshot: the chunk's progress is not saved
            row = await slot_row(settings, src.slot)
            assert row is not None and parse_lsn(row[0]) < written, (row, written)
        assert await read_records(settings.kafka.bootstrap, dlq, 0, 1.0) == []
        assert await read_records(settings.kafka.bootstrap, topic, 0, 1.0) == []  # nor row 1

        monkeypatch.setattr(EventBuilder, "change", real)  # the bug fixed: all rows go out
        await src.stop()
        failures.clear()
        await src.start()
        recs = await read_records(settings.kafka.bootstrap, topic, 3)
        assert await read_records(settings.kafka.bootstrap, dlq, 0, 1.0) == []
    assert failures == []
    keys = sorted(r.key for r in recs)
    assert keys == [b"1", b"2", b"3"], keys


@pytest.mark.parametrize("case", CDC_CASES)
async def test_a_cdc_row_that_cannot_be_encoded_is_dead_lettered_alone(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    bad = UnencodableRowError("a value JSON cannot hold")
    t, snapshot = await _cdc_table(settings, monkeypatch, case, bad)
    async with cdc_source(settings, tables=[f"public.{t}"], snapshot=snapshot) as src:
        failures = watch(src)
        if case == "stream":
            await _cdc_rows(settings, t)
        recs = await read_records(settings.kafka.bootstrap, f"{src.name}.public.{t}", 2)
        dead = await read_records(settings.kafka.bootstrap, f"{src.name}.dlq", 1)
        st = src.status()
    assert failures == [] and st.state != "failed", st
    assert sorted(r.key for r in recs) == [b"1", b"3"]
    [letter] = dead
    headers = dict(letter.headers)
    assert headers["eventpipe.dlq.exception.class"].endswith(b"UnencodableRowError"), headers
    assert orjson.loads(letter.value)["columns"]["id"] == "2"
