"""kill -9 of the connector mid-stream, and standby takeover, with real processes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventpipe.connectors.postgres_cdc import slot as slots
from eventpipe.envelope.kafka import from_kafka
from eventpipe.errors import DatabaseUnavailableError
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.test_cdc_support import (
    ServiceProcess,
    caught_up,
    cdc_source,
    drop_cdc_objects,
    execute,
    flush_lsn,
    pg,
    slot_row,
    unique,
    wait_slot_confirmed,
)


def source_entry(name: str, table: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "postgres_cdc",
        "name": name,
        "tables": [table],
        "slot": name,
        "publication": name,
        "snapshot": "never",
        "batch_size": 300,
        "heartbeat_interval_s": 1,
        "standby_poll_s": 0.2,
        **extra,
    }


async def write_changes(
    settings: Settings, table: str, n: int, *, start: int = 0, seed: int = 1
) -> list[tuple[str, int, int]]:
    """``n`` single-row transactions: inserts of new ids and ``v = v + 1`` updates.
    Returns (op, id, v) for each change, in commit order."""
    rnd = random.Random(seed)
    versions: dict[int, int] = {}
    out: list[tuple[str, int, int]] = []
    next_id = start
    async with await pg(settings) as conn:
        for i in range(n):
            if not versions or i % 3 == 0:
                await conn.execute(f"insert into {table} values (%s, 0)", (next_id,))
                versions[next_id] = 0
                out.append(("c", next_id, 0))
                next_id += 1
            else:
                key = rnd.choice(list(versions))
                versions[key] += 1
                await conn.execute(f"update {table} set v = %s where id = %s", (versions[key], key))
                out.append(("u", key, versions[key]))
            if i % 50 == 0:
                await asyncio.sleep(0.01)
    return out


def check_topic(records: list[Any], expected: list[tuple[str, int, int]]) -> int:
    """Every change present; duplicates only as identical re-sends (same id, same change).
    Returns how many duplicates there were."""
    first: dict[str, dict[str, Any]] = {}
    seen_changes: set[tuple[str, int, int]] = set()
    order: dict[str, list[int]] = {}
    dups = 0
    for r in records:
        ev = from_kafka(r.key, r.value, list(r.headers))
        data = dict(ev.data)
        data.pop("ts_ms")  # processing time: the only field a re-send may change
        if ev.id in first:
            assert first[ev.id] == data, f"{ev.id} re-sent with different content"
            dups += 1
            continue
        first[ev.id] = data
        after = data["after"]
        change = (data["op"], after["id"], after["v"])
        assert change not in seen_changes, f"{change} sent under two ids"
        seen_changes.add(change)
        order.setdefault(str(after["id"]), []).append(after["v"])
    assert seen_changes == set(expected), (
        f"missing {sorted(set(expected) - seen_changes)[:10]}, "
        f"unexpected {sorted(seen_changes - set(expected))[:10]}"
    )
    for key, versions in order.items():
        assert versions == sorted(versions), f"changes of {key} out of order: {versions}"
    return dups


async def test_kill_9_mid_stream_then_restart(settings: Settings, tmp_path: Path) -> None:
    name, t = unique("crash"), unique("crash_t")
    await execute(settings, f"create table {t} (id int primary key, v int not null)")
    entry = source_entry(name, t)
    first = ServiceProcess(settings, tmp_path, [entry])
    second: ServiceProcess | None = None
    try:
        await first.wait_for(f"reading slot {name}")
        writes = asyncio.create_task(write_changes(settings, t, 3000))
        # let changes stream through it for a moment, then kill it mid-stream
        row = await slot_row(settings, name)
        assert row is not None
        initial = row[0]
        for _ in range(400):
            row = await slot_row(settings, name)
            if row is not None and row[0] != initial:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        first.kill9()
        assert not writes.done(), "the writer should still be running at the kill"
        second = ServiceProcess(settings, tmp_path, [entry])
        await second.wait_for(f"reading slot {name}")
        expected = await writes
        await wait_slot_confirmed(settings, name, await flush_lsn(settings), within_s=90)
        assert second.stop() == 0
        records = await read_records(
            settings.kafka.bootstrap, f"{name}.public.{t}", len(expected), timeout=60
        )
    finally:
        first.kill9()
        if second is not None:
            second.kill9()
        await drop_cdc_objects(settings, name, name)
    dups = check_topic(records, expected)
    assert len(records) == len(expected) + dups
    print(f"{len(expected)} changes, {dups} re-sent after the kill")


async def test_standby_process_takes_over_after_kill_9(settings: Settings, tmp_path: Path) -> None:
    name, t = unique("stby"), unique("stby_t")
    await execute(settings, f"create table {t} (id int primary key, v int not null)")
    entry = source_entry(name, t)
    active = ServiceProcess(settings, tmp_path, [entry])
    standby: ServiceProcess | None = None
    try:
        await active.wait_for(f"reading slot {name}")
        standby = ServiceProcess(settings, tmp_path, [entry])
        await standby.wait_for(f"standby for slot {name}")
        expected = await write_changes(settings, t, 200)
        await wait_slot_confirmed(settings, name, await flush_lsn(settings))
        active.kill9()
        await standby.wait_for(f"reading slot {name}", within_s=30)
        expected += await write_changes(settings, t, 200, start=10_000, seed=2)
        await wait_slot_confirmed(settings, name, await flush_lsn(settings))
        assert standby.stop() == 0
        records = await read_records(
            settings.kafka.bootstrap, f"{name}.public.{t}", len(expected), timeout=60
        )
    finally:
        active.kill9()
        if standby is not None:
            standby.kill9()
        await drop_cdc_objects(settings, name, name)
    check_topic(records, expected)
    assert orjson.loads(records[-1].value or b"")["op"] in ("c", "u")


async def test_failure_between_publish_and_advance_resends_the_same_ids(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch reached the broker, then the reader died before moving the slot: the
    next reader reads the same changes and sends them again under the same ids."""
    t = unique("resend")
    await execute(settings, f"create table {t} (id int primary key, v int not null)")
    real_read = slots.read
    failures = {"left": 0}

    async def advance_once_broken(
        conn: Any, slot: str, publication: str, limit: int, *, advance_to: int | None, peek: bool
    ) -> Any:
        if failures["left"] and advance_to is not None and slot.startswith("resend_src"):
            failures["left"] -= 1
            raise DatabaseUnavailableError("connection lost before the slot moved (injected)")
        return await real_read(conn, slot, publication, limit, advance_to=advance_to, peek=peek)

    monkeypatch.setattr(slots, "read", advance_once_broken)
    async with cdc_source(settings, unique("resend_src"), tables=[t], snapshot="never") as src:
        await src.stop()
        await execute(settings, f"insert into {t} select g, 0 from generate_series(1, 20) g")
        failures["left"] = 1  # the first batch after the restart holds the 20 rows
        await src.start()
        await caught_up(settings, src)
        records = await read_records(settings.kafka.bootstrap, f"{src.name}.public.{t}", 40)
    assert failures["left"] == 0
    expected = [("c", i, 0) for i in range(1, 21)]
    assert check_topic(records, expected) == 20  # the whole batch, once more, same ids
