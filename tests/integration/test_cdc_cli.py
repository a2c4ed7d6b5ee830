"""`eventpipe cdc status | snapshot | drop-slot` as a user runs them."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import yaml

from eventpipe.settings import Settings
from tests.integration.test_cdc_support import (
    ROOT,
    caught_up,
    cdc_source,
    execute,
    fetch,
    unique,
)


async def ep(settings: Settings, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    env = dict(
        os.environ,
        EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value(),
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventpipe",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_shows_the_slot_lag_and_last_event(settings: Settings, tmp_path: Path) -> None:
    t = unique("st")
    await execute(settings, f"create table {t} (id int primary key)")
    async with cdc_source(settings, tables=[t], snapshot="never", stall_timeout_s=2) as src:
        await execute(settings, f"insert into {t} values (1), (2)")
        await caught_up(settings, src)
        await asyncio.sleep(1.2)  # the monitor writes the status row every stall_timeout_s / 4
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "sources": [
                        {"type": "postgres_cdc", "name": src.name, "tables": [t], "slot": src.slot}
                    ]
                }
            )
        )
        code, out, err = await ep(settings, "cdc", "status", "-c", str(cfg), "--json")
        code_table, table_out, _ = await ep(settings, "cdc", "status", "-c", str(cfg))
    assert code == 0, err
    rows = {r["slot"]: r for r in map(orjson.loads, out.splitlines())}
    row = rows[src.slot]
    assert (
        row["source"] == src.name and row["plugin"] == "pgoutput" and row["active"] in (True, False)
    )
    assert isinstance(row["lag_bytes"], int) and row["confirmed_flush_lsn"]
    assert row["last_event_id"] and row["last_event_id"].endswith(":1")
    assert row["events_total"] >= 2
    assert code_table == 0 and src.slot in table_out and "replication slots" in table_out


async def test_drop_slot_asks_and_refuses_an_active_slot(settings: Settings) -> None:
    t = unique("drop")
    await execute(settings, f"create table {t} (id int primary key)")
    async with cdc_source(settings, tables=[t], snapshot="never") as src:
        slot = src.slot
        code, _out, err = await ep(settings, "cdc", "drop-slot", slot, "--yes")
        assert code == 2 and "is read by an eventpipe CDC source" in err  # it holds the lock
        await src.stop()
        code, _out, err = await ep(settings, "cdc", "drop-slot", slot)
        assert code == 2 and "--yes" in err  # no terminal to ask on
        code, _out, err = await ep(settings, "cdc", "drop-slot", "no_such_slot_here", "--yes")
        assert code == 2 and "no replication slot named" in err
        code, _out, err = await ep(settings, "cdc", "drop-slot", slot, "--yes")
        assert code == 0, err
        assert "dropped slot" in err
        assert not await fetch(
            settings, "select 1 from pg_replication_slots where slot_name = %s", (slot,)
        )


async def test_snapshot_command_refuses_what_it_cannot_do(
    settings: Settings, tmp_path: Path
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {"type": "postgres_cdc", "name": "a", "tables": ["public.x"]},
                    {"type": "postgres_cdc", "name": "b", "tables": ["public.y"]},
                ]
            }
        )
    )
    code, _out, err = await ep(settings, "cdc", "snapshot", "-c", str(cfg), "--table", "x")
    assert code == 2 and "pass --source NAME" in err
    code, _out, err = await ep(
        settings, "cdc", "snapshot", "-c", str(cfg), "--source", "a", "--table", "public.y"
    )
    assert code == 2 and "not captured by this source" in err
    code, _out, err = await ep(
        settings, "cdc", "snapshot", "-c", str(cfg), "--source", "zz", "--table", "x"
    )
    assert code == 2 and "no postgres_cdc source named 'zz'" in err
