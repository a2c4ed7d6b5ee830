"""Heartbeats release WAL on idle or filtered slots; the stall alarm reaches /readyz."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from eventpipe.connectors.postgres_cdc.lsn import parse_lsn
from eventpipe.service.app import build_app
from eventpipe.settings import Settings
from tests.integration.test_cdc_support import (
    caught_up,
    cdc_source,
    execute,
    fetch,
    flush_lsn,
    slot_row,
    unique,
)


async def test_heartbeats_advance_an_idle_and_filtered_slot(settings: Settings) -> None:
    t, other = unique("quiet"), unique("busy")
    probe = unique("probe")
    await execute(
        settings,
        f"create table {t} (id int primary key)",
        f"create table {other} (id int primary key, v text)",
        ("select pg_create_logical_replication_slot(%s, 'test_decoding')", (probe,)),
    )
    try:
        async with cdc_source(
            settings, tables=[t], snapshot="never", heartbeat_interval_s=0.3, stall_timeout_s=5
        ) as src:
            row = await slot_row(settings, src.slot)
            assert row is not None
            start, start_restart = parse_lsn(row[0]), row[1]
            # WAL the slot has no interest in: another table, not in the publication
            await execute(
                settings,
                f"insert into {other} select g, repeat('x', 500) from generate_series(1, 5000) g",
            )
            written = await flush_lsn(settings)
            deadline = time.monotonic() + 10
            confirmed = start
            while time.monotonic() < deadline and confirmed < written:
                await asyncio.sleep(0.1)
                row = await slot_row(settings, src.slot)
                assert row is not None
                confirmed = parse_lsn(row[0])
            assert confirmed >= written > start, "the slot kept WAL it did not need"
            # restart_lsn (what PostgreSQL keeps WAL for) follows at the next
            # running-transactions record (every 15 s, or on request)
            await execute(settings, "select pg_log_standby_snapshot()")
            released = False
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not released:
                await asyncio.sleep(0.2)
                [(released,)] = await fetch(
                    settings,
                    "select restart_lsn > %s::pg_lsn from pg_replication_slots"
                    " where slot_name = %s",
                    (start_restart, src.slot),
                )
            await asyncio.sleep(1.0)  # a few more heartbeat intervals
            beats = await fetch(
                settings,
                "select data from pg_logical_slot_peek_changes(%s, NULL, NULL) where data like %s",
                (probe, f"%eventpipe.heartbeat%{src.slot}%"),
            )
    finally:
        await execute(settings, ("select pg_drop_replication_slot(%s)", (probe,)))
    assert len(beats) >= 2, "heartbeats are logical messages written every interval"
    assert released, "restart_lsn did not move: WAL is still retained"


async def test_stall_alarm_reaches_readyz(settings: Settings) -> None:
    t = unique("stall")
    await execute(settings, f"create table {t} (id int primary key)")
    async with cdc_source(
        settings, tables=[t], snapshot="never", heartbeat_interval_s=0.25, stall_timeout_s=1.0
    ) as src:
        runner = web.AppRunner(build_app(src.ctx, components=[src]))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:

                async def readyz() -> tuple[int, dict[str, str]]:
                    async with http.get(url + "/readyz") as r:
                        return r.status, (await r.json())["checks"]

                status, checks = await readyz()
                assert status == 200 and checks[f"cdc:{src.name}"] == "ok"
                # the broker "goes away" for this source: nothing can be acknowledged
                await src.ctx.publisher.stop()
                await execute(settings, f"insert into {t} select generate_series(1, 100)")
                # (its publish errors may show first as "failing: ..."; the stall
                # alarm follows once the slot has not advanced for stall_timeout_s)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    status, checks = await readyz()
                    if status == 503 and checks[f"cdc:{src.name}"].startswith("stalled"):
                        break
                    await asyncio.sleep(0.2)
                assert status == 503
                assert checks[f"cdc:{src.name}"].startswith("stalled: slot has not advanced")
                async with http.get(url + "/metrics") as r:
                    text = await r.text()
                assert f'eventpipe_cdc_stalled{{source="{src.name}"}} 1.0' in text
                # back: the reader catches up and the alarm clears
                await src.ctx.publisher.start()
                await caught_up(settings, src, within_s=30)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    status, checks = await readyz()
                    if status == 200:
                        break
                    await asyncio.sleep(0.2)
                assert status == 200, checks
        finally:
            await runner.cleanup()
