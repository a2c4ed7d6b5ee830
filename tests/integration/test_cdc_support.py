"""Helpers the CDC and outbox integration tests share (no tests here).

The database is shared by the whole test session: every test uses its own
tables, slot, publication and topics (:func:`unique`), and drops the slot it made.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import yaml

from eventpipe.connectors.postgres_cdc.lsn import parse_lsn
from eventpipe.connectors.postgres_cdc.source import PostgresCdcSource
from eventpipe.context import Context
from eventpipe.envelope import CloudEvent
from eventpipe.service.context import open_context
from eventpipe.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str = "cdc") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def pg(settings: Settings) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        settings.database.url.get_secret_value(), autocommit=True
    )


async def execute(settings: Settings, *statements: str | tuple[str, Any]) -> None:
    async with await pg(settings) as conn:
        for st in statements:
            if isinstance(st, tuple):
                await conn.execute(st[0], st[1])
            else:
                await conn.execute(st)


async def fetch(settings: Settings, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await pg(settings) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


async def flush_lsn(settings: Settings) -> int:
    [(lsn,)] = await fetch(settings, "select pg_current_wal_flush_lsn()::text")
    return parse_lsn(lsn)


async def slot_row(settings: Settings, slot: str) -> tuple[Any, ...] | None:
    rows = await fetch(
        settings,
        "select confirmed_flush_lsn::text, restart_lsn::text, active"
        " from pg_replication_slots where slot_name = %s",
        (slot,),
    )
    return rows[0] if rows else None


async def drop_cdc_objects(settings: Settings, slot: str, publication: str | None = None) -> None:
    """Drop the slot (waiting for a reader that is going away) and the publication."""
    async with await pg(settings) as conn:
        for _ in range(100):
            cur = await conn.execute(
                "select active_pid from pg_replication_slots where slot_name = %s", (slot,)
            )
            row = await cur.fetchone()
            if row is None:
                break
            if row[0] is not None:
                await asyncio.sleep(0.1)
                continue
            try:
                await conn.execute("select pg_drop_replication_slot(%s)", (slot,))
                break
            except psycopg.errors.ObjectInUse:
                await asyncio.sleep(0.1)
        for table in ("cdc_snapshots", "cdc_status", "cdc_signals"):
            await conn.execute(f"delete from eventpipe.{table} where slot = %s", (slot,))
        if publication:
            await conn.execute(f'drop publication if exists "{publication}"')


def make_source(ctx: Context, name: str, **config: Any) -> PostgresCdcSource:
    config.setdefault("slot", name)
    config.setdefault("publication", name)
    config.setdefault("topic_prefix", name)
    config.setdefault("heartbeat_interval_s", 1.0)
    config.setdefault("signal_poll_s", 0.2)
    cfg = PostgresCdcSource.Config.model_validate(config)
    return PostgresCdcSource(cfg, name=name, ctx=ctx)


@asynccontextmanager
async def cdc_source(
    settings: Settings,
    name: str | None = None,
    *,
    start: bool = True,
    wait: bool = True,
    **config: Any,
) -> AsyncIterator[PostgresCdcSource]:
    """A started postgres_cdc source on its own Context; stopped, its slot and
    publication dropped afterwards."""
    name = name or unique()
    ctx = await open_context(settings, migrate=False)
    src = make_source(ctx, name, **config)
    try:
        if start:
            await src.start()
            if wait:
                await wait_active(src)
        yield src
    finally:
        await src.stop()
        await ctx.close()
        await drop_cdc_objects(settings, src.slot, src.publication)


async def wait_active(src: PostgresCdcSource, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if src.reader is not None and src.reader.position > 0:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{src.name} did not become active (last error: {src.error})")


async def caught_up(settings: Settings, src: PostgresCdcSource, within_s: float = 60.0) -> None:
    """Until the source acknowledged and confirmed everything written so far."""
    await src.wait_position(await flush_lsn(settings), within_s)


async def wait_slot_confirmed(
    settings: Settings, slot: str, lsn: int, within_s: float = 60
) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        row = await slot_row(settings, slot)
        if row is not None and row[0] is not None and parse_lsn(row[0]) >= lsn:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"slot {slot} did not confirm {lsn:X}: {await slot_row(settings, slot)}")


def final_state(events: Iterable[CloudEvent]) -> dict[str, dict[str, Any] | None]:
    """Replay change events (topic order per key): key -> last row, None once deleted."""
    state: dict[str, dict[str, Any] | None] = {}
    for ev in events:
        op = ev.data["op"]
        key = ev.partitionkey
        assert key is not None
        if op in ("c", "u", "r"):
            state[key] = ev.data["after"]
        elif op == "d":
            state[key] = None
    return state


# ----------------------------------------------------------- subprocesses
class ServiceProcess:
    """``eventpipe run --role cdc`` as a real process (for kill -9 tests)."""

    def __init__(self, settings: Settings, tmp: Path, sources: list[dict[str, Any]]) -> None:
        cfg = tmp / f"cdc-{uuid.uuid4().hex[:6]}.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "service": {"log_level": "INFO", "port": 0},
                    "kafka": {"linger_ms": 1},
                    "sources": sources,
                }
            )
        )
        env = dict(
            os.environ,
            EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
            EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value(),
            PYTHONUNBUFFERED="1",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eventpipe", "run", "-c", str(cfg), "--role", "cdc"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.output.append(line)
            self.lines.put(line)

    async def wait_for(self, pattern: str, within_s: float = 60.0) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
                continue
            if rx.search(line):
                return line
        raise TimeoutError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.output))

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
