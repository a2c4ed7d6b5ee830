"""A relay (the outbox relay, the CDC source's reader, the webhook spool's relay)
whose session fails on an error no class explains (a bug) stops loudly, as a
pipeline does (test_pipeline_failure): the component is ``failed`` in the status
and /readyz, the service shuts down with ComponentFailedError (``eventpipe run``
exits 3), and nothing it did not publish was acknowledged: restarted without the
bug, it publishes every row once."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from eventpipe.cli.common import report
from eventpipe.connectors.outbox import api as outbox
from eventpipe.connectors.postgres_cdc.lsn import parse_lsn
from eventpipe.connectors.postgres_cdc.publishing import RecordPublisher
from eventpipe.connectors.postgres_cdc.source import PostgresCdcSource
from eventpipe.connectors.webhook.spool import Spool, SpoolRecord, SpoolState
from eventpipe.db.pool import open_pool
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.publisher import Publisher
from eventpipe.service.runner import ComponentFailedError, Role, Service, serve_until_signalled
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.console_support import ADMIN_TOKEN, console_settings
from tests.integration.test_cdc_support import (
    drop_cdc_objects,
    execute,
    fetch,
    flush_lsn,
    pg,
    slot_row,
    unique,
    wait_active,
)
from tests.integration.test_pipeline_support import running

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BUG = "a bug in the relay's publishing"


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status, await r.json()


def with_source(settings: Settings, entry: dict[str, Any]) -> Settings:
    s = console_settings(settings)  # the admin token: GET /v1/status
    kafka = s.kafka.model_copy(update={"auto_create_topics": True})
    return s.model_copy(update={"sources": [entry], "kafka": kafka})


async def fails_loudly(
    s: Settings,
    role: Role,
    check: str,
    caplog: pytest.LogCaptureFixture,
    meanwhile: Callable[[Service], Awaitable[None]] | None = None,
) -> tuple[ComponentFailedError, dict[str, Any], dict[str, Any]]:
    """Serve ``s`` as ``eventpipe run`` does until it stops on its own; while it runs,
    ``meanwhile(service)``, then (once a component failed) /readyz and the status
    of ``check``.  Returns the error it stopped with, /readyz and the status."""
    seen: dict[str, Any] = {}

    async def on_ready(svc: Service) -> None:
        if meanwhile is not None:
            await meanwhile(svc)
        try:
            await asyncio.wait_for(svc.failed.wait(), 25)
        except TimeoutError:
            [comp] = [c for c in svc.components if c.check_name == check]
            st = comp.status()
            raise AssertionError(
                f"{check} did not stop within 25s: state {st.state}, "
                f"{len(st.recent_errors)} error(s), last {st.last_error}"
            ) from None
        code, seen["ready"] = await _get(f"{svc.url}/readyz")
        assert code == 503, seen["ready"]
        code, body = await _get(f"{svc.url}/v1/status?component={check}", AUTH)
        assert code == 200, body
        [seen["status"]] = body["components"]
        await asyncio.sleep(1.5)  # longer than the first backoff: no session runs again
        [comp] = [c for c in svc.components if c.check_name == check]
        seen["state_later"] = comp.status().state

    with (
        caplog.at_level(logging.ERROR, logger="eventpipe"),
        pytest.raises(ComponentFailedError) as info,
    ):
        await asyncio.wait_for(serve_until_signalled(Service(s, role), on_ready), 50)
    return info.value, seen["ready"], seen


def assert_failed_loudly(
    err: ComponentFailedError,
    seen: dict[str, Any],
    check: str,
    label: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert report(err) == 3  # what `eventpipe run` exits with
    assert isinstance(err.__cause__, RuntimeError)
    assert f"{label} stopped on an unexpected error (RuntimeError: {BUG})" in str(err)
    assert seen["ready"]["checks"][check] == f"failed: RuntimeError: {BUG}", seen["ready"]
    st = seen["status"]
    assert (st["check"], st["state"], st["health"]) == (
        check,
        "failed",
        f"failed: RuntimeError: {BUG}",
    )
    assert st["last_error"]["class"] == "builtins.RuntimeError", st
    assert len(st["recent_errors"]) == 1, st  # one session, not retried
    assert seen["state_later"] == "failed"
    named = [r.getMessage() for r in caplog.records if "builtins.RuntimeError" in r.getMessage()]
    assert named and BUG in named[0], [r.getMessage() for r in caplog.records]


async def until_count(settings: Settings, query: str, n: int, params: Any = None) -> None:
    for _ in range(100):
        if await fetch(settings, query, params) == [(n,)]:
            return
        await asyncio.sleep(0.1)
    assert await fetch(settings, query, params) == [(n,)]


def broken_publish(calls: list[int]) -> Callable[..., Awaitable[int]]:
    """RecordPublisher.publish with a bug on the first call that has records (a call
    with none, e.g. for a transaction of other tables' changes or a heartbeat, goes
    through as before)."""
    real = RecordPublisher.publish

    async def publish(self: RecordPublisher, outs: Any, dead: Any = None) -> int:
        if not outs and not dead:
            return await real(self, outs, dead)
        calls.append(len(outs))
        raise RuntimeError(BUG)

    return publish


# ------------------------------------------------------------------ outbox
@pytest.mark.parametrize("mode", ["poll", "cdc"])
async def test_an_outbox_relay_bug_stops_the_service_and_its_rows_stay(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    name = unique("obbug")
    table = f"public.{name}"
    await execute(settings, outbox.create_table_sql(table))
    events = [
        CloudEvent.create("shop.order.paid", "/shop", {"n": i}, id=f"{name}-{i}") for i in range(5)
    ]
    async with await pg(settings) as conn, conn.transaction():
        await outbox.publish_many(
            conn, [(e, "order", str(i)) for i, e in enumerate(events)], table=table
        )
    s = with_source(
        settings,
        {
            "type": "outbox",
            "name": name,
            "mode": mode,
            "slot": name,
            "publication": name,
            "table": table,
            "topic": name + ".{aggregatetype}",
            "poll_interval_ms": 20,
        },
    )
    calls: list[int] = []
    real = RecordPublisher.publish
    monkeypatch.setattr(RecordPublisher, "publish", broken_publish(calls))

    try:
        err, _, seen = await fails_loudly(s, "cdc", f"cdc:{name}", caplog)
        assert_failed_loudly(err, seen, f"cdc:{name}", f"outbox source {name}", caplog)
        assert calls == [5]  # cdc: the rows left in the table go first
        # nothing acknowledged, nothing deleted
        assert await fetch(settings, f"select count(*) from {table}") == [(5,)]

        monkeypatch.setattr(RecordPublisher, "publish", real)
        async with running(s, "cdc"):
            recs = await read_records(s.kafka.bootstrap, f"{name}.order", 5)
            await until_count(settings, f"select count(*) from {table}", 0)
    finally:
        await drop_cdc_objects(settings, name, name)
    ids = sorted(dict(r.headers)["ce_id"].decode() for r in recs)
    assert ids == sorted(e.id for e in events)  # each once


# --------------------------------------------------------------------- cdc
async def test_a_cdc_reader_bug_stops_the_service_and_the_slot_stays(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("cdcbug")
    await execute(settings, f"create table public.{name} (id int primary key, v text)")
    s = with_source(
        settings,
        {
            "type": "postgres_cdc",
            "name": name,
            "tables": [f"public.{name}"],
            "slot": name,
            "publication": name,
            "topic_prefix": name,
            "snapshot": "never",
        },
    )
    calls: list[int] = []
    real = RecordPublisher.publish
    written: dict[str, int] = {}

    async def meanwhile(svc: Service) -> None:
        [src] = svc.components
        assert isinstance(src, PostgresCdcSource)
        await wait_active(src)
        monkeypatch.setattr(RecordPublisher, "publish", broken_publish(calls))
        await execute(
            settings, f"insert into public.{name} select g, 'v' || g from generate_series(1, 3) g"
        )
        written["lsn"] = await flush_lsn(settings)

    try:
        err, _, seen = await fails_loudly(s, "cdc", f"cdc:{name}", caplog, meanwhile)
        assert_failed_loudly(err, seen, f"cdc:{name}", f"postgres_cdc source {name}", caplog)
        assert calls and calls[0] >= 1
        row = await slot_row(settings, name)
        assert row is not None
        assert parse_lsn(row[0]) < written["lsn"], row  # the slot did not pass the rows

        monkeypatch.setattr(RecordPublisher, "publish", real)
        async with running(s, "cdc"):
            recs = await read_records(s.kafka.bootstrap, f"{name}.public.{name}", 3)
    finally:
        await drop_cdc_objects(settings, name, name)
    keys = sorted(r.key for r in recs)
    assert len(recs) == 3 and len(set(keys)) == 3, keys  # each row once


# ------------------------------------------------------------------- spool
async def test_a_spool_relay_bug_stops_the_service_and_the_spool_keeps_its_rows(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"spbug-{uuid.uuid4().hex[:8]}"
    topic = f"{name}.in"
    ids = [f"{name}-{i}" for i in range(4)]
    pool = await open_pool(settings.database)
    try:  # requests spooled while the broker was away
        spool = Spool(pool, name, SpoolState(), dedup=False, timeout_s=10)
        await spool.write(
            [
                SpoolRecord(topic, i, KafkaMessage(None, b'{"n": 1}', [("ce_id", i.encode())]))
                for i in ids
            ],
            [],
        )
    finally:
        await pool.close()
    s = with_source(
        settings,
        {
            "type": "webhook",
            "name": name,
            "topic": topic,
            "verify": {"scheme": "none"},
            "spool": "postgres",
        },
    )
    calls: list[str] = []
    real = Publisher.publish_messages

    async def broken(self: Publisher, topic: str, *args: Any, via: str = "", **kw: Any) -> Any:
        if via == "webhook-spool":
            calls.append(topic)
            raise RuntimeError(BUG)
        return await real(self, topic, *args, via=via, **kw)

    monkeypatch.setattr(Publisher, "publish_messages", broken)
    spooled = "select count(*) from eventpipe.webhook_spool where source = %s"
    try:
        err, _, seen = await fails_loudly(s, "ingest", f"source:{name}", caplog)
        assert_failed_loudly(err, seen, f"source:{name}", f"webhook source {name}", caplog)
        assert calls == [topic]
        assert await fetch(settings, spooled, (name,)) == [(4,)]

        monkeypatch.setattr(Publisher, "publish_messages", real)
        async with running(s, "ingest"):
            recs = await read_records(s.kafka.bootstrap, topic, 4)
            await until_count(settings, spooled, 0, (name,))
    finally:
        await execute(settings, ("delete from eventpipe.webhook_spool where source = %s", (name,)))
    got = sorted(dict(r.headers)["ce_id"].decode() for r in recs)
    assert got == ids  # each once
