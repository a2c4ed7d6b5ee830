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
    """Runs ``eventpipe *args`` with ``settings``' database and broker; stderr comes
    back with its whitespace collapsed (the console wraps long lines)."""
    env = dict(
        os.environ,
        EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value(),
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        EVENTPIPE_KAFKA_MAX_REQUEST_SIZE=str(settings.kafka.max_request_size),
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
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), " ".join(err.decode().split())


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


async def _signals(settings: Settings, slot: str) -> int:
    [(n,)] = await fetch(
        settings, "select count(*) from eventpipe.cdc_signals where slot = %s", (slot,)
    )
    return int(n)


async def test_snapshot_where_is_checked_before_it_is_queued(settings: Settings) -> None:
    """A filter that is not one boolean expression over the table's columns is refused
    with PostgreSQL's reason, and nothing is queued; an unknown slot fails at once."""
    t = unique("where")
    await execute(settings, f"create table {t} (id int primary key, region text)")
    async with cdc_source(settings, tables=[t], snapshot="never") as src:
        refused = "is not one boolean SQL expression over the columns of"
        for bad, why in (
            ("true) or (true", refused),
            ("true] or array[true", refused),
            ("region[i] = 'a') or (true", refused),  # printed as is, not as console markup
            ("true) or true --", refused),
            ("id > 0) order by (id", refused),
            ("region = 'eu'; delete from x", refused),
            ("nosuch = 1", 'column "nosuch" does not exist'),
            ("id + 1", "must be type boolean"),
            ("true, false", "must be type boolean"),
            ("id = $1", "there is no parameter $1"),
        ):
            code, _out, err = await ep(
                settings, "cdc", "snapshot", "--slot", src.slot, "-t", t, "--where", bad
            )
            assert code == 2, (bad, err)
            assert f"--where: {bad!r} {refused}" in err and why in err, (bad, err)
        assert await _signals(settings, src.slot) == 0
        code, _out, err = await ep(
            settings, "cdc", "snapshot", "--slot", "no_such_slot_x", "-t", t, "--wait"
        )
        assert code == 2 and "--slot: no replication slot named 'no_such_slot_x'" in err, err
        # a filter that is one expression (with its own parentheses, strings and a
        # comment) is taken
        ok = "(region = ')' or region is null) and id > 0 -- a comment"
        code, _out, err = await ep(
            settings, "cdc", "snapshot", "--slot", src.slot, "-t", t, "--where", ok
        )
        assert code == 0, err
        assert await _signals(settings, src.slot) == 1


async def test_a_failed_snapshot_tells_the_cli_why(settings: Settings) -> None:
    """The filter parses but fails on the rows (or writes): the CLI prints the reason
    from the snapshot's row, and the filter ran read-only."""
    t, seq = unique("why"), unique("seq")
    await execute(
        settings,
        f"create table {t} (id int primary key)",
        f"insert into {t} select generate_series(1, 20)",
        f"create sequence {seq}",
    )
    async with cdc_source(settings, tables=[t], snapshot="never") as src:
        for where, why in (
            ("1 / (id - 5) > 0", "failed: DivisionByZero: division by zero"),
            (f"nextval('{seq}') > 0", "cannot execute nextval() in a read-only transaction"),
        ):
            code, _out, err = await ep(
                settings, "cdc", "snapshot", "--slot", src.slot, "-t", t, "--where", where, "--wait"
            )
            assert code == 1 and why in err, err
    [(called,)] = await fetch(settings, f"select is_called from {seq}")
    assert called is False  # the filter never wrote
