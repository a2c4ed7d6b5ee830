"""Snapshots in key chunks interleaved with the log, while writes continue."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from typing import Any

from eventpipe.settings import Settings
from tests.helpers import read_events
from tests.integration.test_cdc_support import (
    ROOT,
    caught_up,
    cdc_source,
    execute,
    fetch,
    final_state,
    pg,
    unique,
)


async def writer(
    settings: Settings, table: str, ids: list[int], stop: asyncio.Event, *, next_id: int
) -> int:
    """Random updates (v = v + 1), deletes and inserts until ``stop``; returns how many
    row changes it made.  Deleted ids are never inserted again."""
    rnd = random.Random(7)
    live = list(ids)
    changes = 0
    async with await pg(settings) as conn:
        while not stop.is_set() and live:
            r = rnd.random()
            async with conn.transaction():
                if r < 0.75:
                    picked = rnd.sample(live, min(5, len(live)))
                    cur = await conn.execute(
                        f"update {table} set v = v + 1 where id = any(%s)", (picked,)
                    )
                elif r < 0.85:
                    victim = live.pop(rnd.randrange(len(live)))
                    cur = await conn.execute(f"delete from {table} where id = %s", (victim,))
                else:
                    cur = await conn.execute(f"insert into {table} values (%s, 0)", (next_id,))
                    live.append(next_id)
                    next_id += 1
                changes += cur.rowcount
            await asyncio.sleep(0.002)
    return changes


async def numbered_table(settings: Settings, prefix: str, n: int) -> str:
    """A new table (id, v) holding rows 1..n with v = 0."""
    t = unique(prefix)
    await execute(
        settings,
        f"create table {t} (id int primary key, v int not null)",
        f"insert into {t} select g, 0 from generate_series(1, {n}) g",
    )
    return t


async def snapshot_rows(settings: Settings, slot: str) -> tuple[int, bool]:
    [(rows, done)] = await fetch(
        settings,
        "select coalesce(sum(rows_read), 0), bool_and(status = 'done') from eventpipe.cdc_snapshots"
        " where slot = %s",
        (slot,),
    )
    return int(rows), bool(done)


async def wait_snapshot_done(settings: Settings, slot: str, within_s: float = 60) -> int:
    for _ in range(int(within_s * 10)):
        rows, done = await snapshot_rows(settings, slot)
        if done:
            return rows
        await asyncio.sleep(0.1)
    raise TimeoutError(f"snapshot of {slot} not done: {await snapshot_rows(settings, slot)}")


def assert_never_stale(events: list[Any]) -> None:
    """Per key, in topic order: versions never go back, and nothing follows a delete."""
    last: dict[str, int] = {}
    deleted: set[str] = set()
    for ev in events:
        key = ev.partitionkey
        assert key not in deleted, f"event after the delete of {key}: {ev.data}"
        if ev.data["op"] == "d":
            deleted.add(key)
            continue
        v = ev.data["after"]["v"]
        assert v >= last.get(key, -1), f"stale {ev.data['op']} of {key}: v {v} after {last[key]}"
        last[key] = v


async def test_initial_snapshot_while_writes_continue(settings: Settings) -> None:
    n = 3000
    t = await numbered_table(settings, "snap", n)
    stop = asyncio.Event()
    async with cdc_source(settings, tables=[t], snapshot="initial", snapshot_chunk_size=200) as src:
        write = asyncio.create_task(writer(settings, t, list(range(1, n + 1)), stop, next_id=n + 1))
        read = await wait_snapshot_done(settings, src.slot)
        await asyncio.sleep(0.3)  # some writes after the snapshot, too
        stop.set()
        changes = await write
        await caught_up(settings, src)
        events = await read_events(
            settings.kafka.bootstrap, f"{src.name}.public.{t}", read + changes, timeout=60
        )
    assert changes > 50, "the writer should have overlapped the snapshot"
    assert len(events) == read + changes
    reads = [e for e in events if e.data["op"] == "r"]
    assert len(reads) == read and all(e.data["source"]["snapshot"] == "true" for e in reads)
    assert len({e.id for e in events}) == len(events)
    # the topic replays to the table
    table = {str(i): v for i, v in await fetch(settings, f"select id, v from {t}")}
    state = final_state(events)
    assert {k: r["v"] for k, r in state.items() if r is not None} == table
    assert_never_stale(events)


async def test_incremental_snapshot_from_the_cli_while_streaming(settings: Settings) -> None:
    n = 1000
    t = await numbered_table(settings, "incr", n)
    stop = asyncio.Event()
    async with cdc_source(settings, tables=[t], snapshot="never", snapshot_chunk_size=64) as src:
        write = asyncio.create_task(writer(settings, t, list(range(1, n + 1)), stop, next_id=n + 1))
        env = dict(os.environ, EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value())
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventpipe",
            "cdc",
            "snapshot",
            "--slot",
            src.slot,
            "--table",
            t,
            "--where",
            "id % 2 = 0",
            "--wait",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await asyncio.wait_for(proc.communicate(), 120)
        stop.set()
        changes = await write
        await caught_up(settings, src)
        read, _ = await snapshot_rows(settings, src.slot)
        events = await read_events(
            settings.kafka.bootstrap, f"{src.name}.public.{t}", read + changes, timeout=60
        )
    assert proc.returncode == 0, err.decode()
    assert "snapshot done" in err.decode()
    reads = [e for e in events if e.data["op"] == "r"]
    assert reads and all(int(e.partitionkey or 0) % 2 == 0 for e in reads)
    assert all(e.data["source"]["snapshot"] == "incremental" for e in reads)
    assert len(events) == read + changes
    assert_never_stale(events)
    # every even row that was never changed by the writer came through the snapshot
    changed = {e.partitionkey for e in events if e.data["op"] != "r"}
    evens = {str(i) for i in range(2, n + 1, 2)}
    assert evens - changed <= {e.partitionkey for e in reads}


async def test_snapshot_resumes_after_a_restart(settings: Settings) -> None:
    n = 1000
    t = await numbered_table(settings, "resume", n)
    async with cdc_source(settings, tables=[t], snapshot="initial", snapshot_chunk_size=50) as src:
        for _ in range(200):
            rows, _done = await snapshot_rows(settings, src.slot)
            if rows >= 200:
                break
            await asyncio.sleep(0.01)
        await src.stop()
        rows_at_stop, done = await snapshot_rows(settings, src.slot)
        assert 0 < rows_at_stop < n and not done
        await src.start()
        assert await wait_snapshot_done(settings, src.slot) == n
        events = await read_events(settings.kafka.bootstrap, f"{src.name}.public.{t}", n)
    assert len(events) == n  # each row read once: the second run went on where the first stopped
    assert sorted(int(e.partitionkey or 0) for e in events) == list(range(1, n + 1))


async def test_initial_only_reads_tables_without_a_slot(settings: Settings) -> None:
    t, n = unique("export"), 500
    await execute(
        settings,
        f"create table {t} (id int primary key, v int not null)",
        f"insert into {t} select g, g from generate_series(1, {n}) g",
    )
    async with cdc_source(
        settings, tables=[t], snapshot="initial_only", snapshot_chunk_size=128, wait=False
    ) as src:
        events = await read_events(settings.kafka.bootstrap, f"{src.name}.public.{t}", n)
        for _ in range(100):
            if (await snapshot_rows(settings, src.slot))[1]:
                break
            await asyncio.sleep(0.05)
        slots = await fetch(
            settings, "select 1 from pg_replication_slots where slot_name = %s", (src.slot,)
        )
    assert len(events) == n and {e.data["op"] for e in events} == {"r"}
    assert len({e.id for e in events}) == n
    assert not slots


async def test_a_filter_cannot_escape_its_chunk(settings: Settings) -> None:
    """A filter written straight into the signals table (past the CLI's check) that
    closes the chunk's parenthesis is refused by the source: the snapshot fails with
    the reason, and the table is not read again and again."""
    n = 300
    t = await numbered_table(settings, "escape", n)
    async with cdc_source(settings, tables=[t], snapshot="never", snapshot_chunk_size=64) as src:
        await execute(
            settings,
            (
                "insert into eventpipe.cdc_signals (slot, type, data)"
                " values (%s, 'snapshot', %s::jsonb)",
                (src.slot, f'{{"tables": ["public.{t}"], "where": "true) or (true"}}'),
            ),
        )
        status: tuple[str, str | None] | None = None
        for _ in range(300):
            rows = await fetch(
                settings,
                "select status, error from eventpipe.cdc_snapshots where slot = %s",
                (src.slot,),
            )
            if rows and rows[0][0] in ("done", "failed"):
                status = rows[0]
                break
            await asyncio.sleep(0.1)
        await caught_up(settings, src)
        events = await read_events(settings.kafka.bootstrap, f"{src.name}.public.{t}", 0, 2)
    assert status is not None, "the snapshot never finished"
    assert status[0] == "failed" and "syntax error" in (status[1] or ""), status
    assert len(events) <= n
