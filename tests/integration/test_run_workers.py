"""``eventpipe run --workers 2`` as a real process tree: two workers share the
webhook port (SO_REUSEPORT) and the pipeline's partitions, the supervisor merges
their /metrics and /v1/status, restarts a worker killed with -9 (nothing
acknowledged is lost), and drains both on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from eventpipe.embedded.process import free_port
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.test_cdc_crash import check_topic, source_entry, write_changes
from tests.integration.test_cdc_support import (
    drop_cdc_objects,
    execute,
    flush_lsn,
    unique,
    wait_slot_confirmed,
)
from tests.integration.test_pipeline_support import sql, wait_rows

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Tree:
    """The supervisor process and where it serves."""

    proc: subprocess.Popen[bytes]
    port: int
    ops: str  # the supervisor's ops URL
    log: Path
    source: str
    table: str
    url: str  # eventpipe's database
    token: str | None = None  # service.admin_token, sent to the status routes

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def get(self, path: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(self.ops + path, headers=headers) as r,
        ):
            body = await r.json() if r.content_type.endswith("json") else await r.text()
            return r.status, body

    async def status(self) -> dict[str, Any]:
        code, body = await self.get("/v1/status")
        assert code == 200, body
        assert isinstance(body, dict)
        return body

    async def wait(self, ready: Any, within_s: float = 60.0, what: str = "") -> dict[str, Any]:
        """The supervisor's status, once ``ready(status)`` holds."""
        deadline = time.monotonic() + within_s
        snap: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_text()[-4000:]
            try:
                snap = await self.status()
            except (aiohttp.ClientError, TimeoutError, AssertionError):
                await asyncio.sleep(0.3)
                continue
            if ready(snap):
                return snap
            await asyncio.sleep(0.3)
        raise AssertionError(f"not {what} in {within_s}s: {snap}\n{self.log_text()[-4000:]}")

    async def post(self, http: aiohttp.ClientSession, key: str) -> int | str:
        body = {"id": key, "total": 5}
        try:
            async with http.post(
                f"http://127.0.0.1:{self.port}/webhooks/{self.source}", json=body
            ) as r:
                await r.read()
                return r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__

    def kill(self) -> None:
        """kill -9 of the supervisor: its workers see it gone and stop."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 50.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def all_running(snap: dict[str, Any]) -> bool:
    return len(snap["workers"]) == 2 and all(w["state"] == "running" for w in snap["workers"])


def start(
    argv: list[str], env: dict[str, str], log: Path, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "eventpipe", *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
        )


async def until_accepted(accepted: list[str], n: int, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        if len(accepted) >= n:
            return
        assert time.monotonic() < deadline, f"only {len(accepted)} of {n} webhooks accepted"
        await asyncio.sleep(0.1)


async def launch(
    settings: Settings,
    tmp: Path,
    cfg: dict[str, Any],
    name: str,
    role: str = "all",
    service: dict[str, Any] | None = None,
) -> Tree:
    """``eventpipe run --workers 2`` with ``cfg`` (ports added; ``service``: other
    ``service`` keys), once both workers run."""
    url = settings.database.url.get_secret_value()
    port, ops = free_port(), free_port()
    cfg["service"] = {
        "port": port,
        "ops_port": ops,
        "log_level": "INFO",
        "console": {"public_read": True},
        **(service or {}),
    }
    path = tmp / "workers.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = tmp / "supervisor.log"
    env = dict(
        os.environ,
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        EVENTPIPE_DATABASE_URL=url,
        PYTHONPATH=str(ROOT),
    )
    proc = start(["run", "-c", str(path), "--workers", "2", "--role", role], env, log)
    token = (service or {}).get("admin_token")
    t = Tree(proc, port, f"http://127.0.0.1:{ops}", log, name, name, url, token)
    try:
        await t.wait(all_running, 90, "both workers running")
    except BaseException:
        t.kill()
        raise
    return t


def webhook_pipeline(name: str) -> dict[str, Any]:
    """A webhook -> topic (4 partitions) -> pipeline -> Postgres upsert into table
    ``name`` (``id text primary key, total int``)."""
    return {
        "kafka": {"linger_ms": 1},
        "database": {"pool_max": 4},
        "topics": [{"name": f"{name}.in", "partitions": 4}],
        "sources": [
            {"type": "webhook", "name": name, "topic": f"{name}.in", "verify": {"scheme": "none"}}
        ],
        "pipelines": [
            {
                "name": name,
                "source": {"topics": [f"{name}.in"], "session_timeout": "6s"},
                "sinks": [
                    {
                        "postgres": {
                            "table": name,
                            "mode": "upsert",
                            "key": ["id"],
                            "columns": {"id": ".data.id", "total": ".data.total"},
                        }
                    }
                ],
                "batch": {"within": "5ms"},
            }
        ],
    }


async def webhook_table(settings: Settings, prefix: str) -> str:
    """A new table for :func:`webhook_pipeline`; its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await sql(
        settings.database.url.get_secret_value(),
        f"create table {name} (id text primary key, total int)",
    )
    return name


@contextlib.asynccontextmanager
async def webhook_tree(
    settings: Settings, tmp: Path, prefix: str, service: dict[str, Any] | None = None
) -> AsyncIterator[Tree]:
    """:func:`webhook_pipeline` in 2 workers (``service``: more ``service`` keys)."""
    name = await webhook_table(settings, prefix)
    t = await launch(settings, tmp, webhook_pipeline(name), name, service=service)
    try:
        yield t
    finally:
        t.kill()


@pytest.fixture
async def tree(settings: Settings, tmp_path: Path) -> AsyncIterator[Tree]:
    """A webhook -> topic (4 partitions) -> pipeline -> Postgres upsert, in 2 workers."""
    async with webhook_tree(settings, tmp_path, "wk") as t:
        yield t


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def webhook_requests(text: str, source: str) -> float:
    got = samples(text, "eventpipe_webhook_requests_total")
    return sum(v for labels, v in got.items() if ("source", source) in labels)


async def scrape(url: str) -> str:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(url + "/metrics") as r,
    ):
        assert r.status == 200
        return await r.text()


async def test_two_workers_share_the_port_and_pipeline_merge_metrics_and_drain(
    tree: Tree,
) -> None:
    snap = await tree.status()
    assert [w["worker"] for w in snap["workers"]] == [0, 1]
    pids = [w["pid"] for w in snap["workers"]]
    assert all(pids) and pids[0] != pids[1]
    checks = {(c["worker"], c["check"]) for c in snap["components"]}
    for worker in (0, 1):
        assert (worker, f"source:{tree.source}") in checks, checks
        assert (worker, f"pipeline:{tree.source}") in checks, checks

    n = 80
    # a new connection per request: the kernel picks a worker for each
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        answers = await asyncio.gather(*(tree.post(http, f"k{i}") for i in range(n)))
    assert answers == [200] * n, answers
    await wait_rows(tree.url, f"select count(*) from {tree.table}", n, timeout=45)

    merged = await scrape(tree.ops)
    each = [await scrape(w["ops_url"]) for w in snap["workers"]]
    per_worker = [webhook_requests(text, tree.source) for text in each]
    assert all(v > 0 for v in per_worker), f"one worker took every connection: {per_worker}"
    assert sum(per_worker) == n
    assert webhook_requests(merged, tree.source) == n  # summed, not one worker's
    up = samples(merged, "eventpipe_worker_up")
    assert up == {(("worker", "0"),): 1.0, (("worker", "1"),): 1.0}
    # a gauge stays per worker
    start = samples(merged, "process_start_time_seconds")
    assert {labels for labels in start} == {(("worker", "0"),), (("worker", "1"),)}

    code, ready = await tree.get("/readyz")
    assert code == 200, ready
    assert ready["workers"] == {"0": "ready", "1": "ready"}
    assert ready["checks"][f"worker1:pipeline:{tree.source}"] == "ok"

    assert await asyncio.to_thread(tree.stop) == 0, tree.log_text()[-3000:]
    for pid in pids:  # the workers are gone too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "stopped: exit status 0" in tree.log_text()


async def test_a_worker_killed_with_9_is_restarted_and_nothing_acknowledged_is_lost(
    tree: Tree,
) -> None:
    snap = await tree.status()
    victim = snap["workers"][0]
    accepted: list[str] = []
    refused: list[int | str] = []
    stop_sending = asyncio.Event()

    async def send() -> None:
        connector = aiohttp.TCPConnector(force_close=True)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            i = 0
            while not stop_sending.is_set():
                batch = [f"s{i + j}" for j in range(10)]
                i += 10
                got = await asyncio.gather(*(tree.post(http, k) for k in batch))
                for key, answer in zip(batch, got, strict=True):
                    (accepted.append(key) if answer == 200 else refused.append(answer))
                await asyncio.sleep(0.02)

    sender = asyncio.create_task(send())
    try:
        await until_accepted(accepted, 60)
        before = webhook_requests(await scrape(tree.ops), tree.source)
        assert before > 0
        os.kill(victim["pid"], signal.SIGKILL)
        snap = await tree.wait(
            lambda s: s["workers"][0]["restarts"] == 1 and all_running(s),
            60,
            "worker 0 restarted",
        )
        assert snap["workers"][0]["pid"] != victim["pid"]
        assert snap["workers"][0]["last_exit"] == "killed by SIGKILL"
        await until_accepted(accepted, len(accepted) + 40)
    finally:
        stop_sending.set()
        await sender
    # every request answered 200 is a row; the others were never acknowledged
    assert all(isinstance(r, str) or r >= 500 for r in refused), refused
    await wait_rows(tree.url, f"select count(*) from {tree.table}", len(accepted), timeout=50)
    rows = {r[0] for r in await sql(tree.url, f"select id from {tree.table}")}
    assert set(accepted) <= rows, sorted(set(accepted) - rows)[:10]

    merged = await scrape(tree.ops)
    assert samples(merged, "eventpipe_worker_restarts_total")[(("worker", "0"),)] == 1.0
    # the dead worker's count is carried: the service's counter never goes down
    assert webhook_requests(merged, tree.source) >= before
    assert "worker 0 (pid" in tree.log_text() and "restarting it in" in tree.log_text()
    # the supervisor itself killed with -9: its workers see it gone and stop
    pids = [w["pid"] for w in (await tree.status())["workers"]]
    tree.kill()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"workers {pids} outlived their supervisor"
        await asyncio.sleep(0.2)


def alive(pid: int) -> bool:
    """``pid`` runs (not a zombie: the workers' parent is gone, init reaps them)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def replication(snap: dict[str, Any], check: str) -> dict[int, str]:
    """worker -> the CDC source's replication (active, waiting, ...)."""
    return {
        c["worker"]: c["details"]["replication"] for c in snap["components"] if c["check"] == check
    }


async def test_cdc_one_reader_per_slot_and_the_standby_worker_takes_over(
    settings: Settings, tmp_path: Path
) -> None:
    """Both workers run the CDC source; the slot's advisory lock keeps one reading,
    the other is standby; kill -9 of the reader: the standby reads on, and the
    restarted worker becomes the standby.  Every change is on the topic."""
    name, table = unique("wcdc"), unique("wcdc_t")
    await execute(settings, f"create table {table} (id int primary key, v int not null)")
    check = f"cdc:{name}"
    cfg = {"kafka": {"linger_ms": 1}, "sources": [source_entry(name, table)]}
    t = await launch(settings, tmp_path, cfg, name, role="cdc")
    try:
        snap = await t.wait(
            lambda s: sorted(replication(s, check).values()) == ["active", "waiting"],
            60,
            "one reader and one standby",
        )
        reader = next(w for w, r in replication(snap, check).items() if r == "active")
        expected = await write_changes(settings, table, 100)
        await wait_slot_confirmed(settings, name, await flush_lsn(settings))
        os.kill(snap["workers"][reader]["pid"], signal.SIGKILL)
        snap = await t.wait(
            lambda s: (
                replication(s, check) == {1 - reader: "active", reader: "waiting"}
                and all_running(s)
            ),
            60,
            "the standby reading and the restarted worker standing by",
        )
        expected += await write_changes(settings, table, 100, start=10_000, seed=2)
        await wait_slot_confirmed(settings, name, await flush_lsn(settings))
        assert await asyncio.to_thread(t.stop) == 0, t.log_text()[-3000:]
        records = await read_records(
            settings.kafka.bootstrap, f"{name}.public.{table}", len(expected), timeout=30
        )
    finally:
        t.kill()
        await drop_cdc_objects(settings, name, name)
    check_topic(records, expected)


async def test_a_config_the_workers_refuse_stops_the_supervisor_with_exit_2(
    settings: Settings, tmp_path: Path
) -> None:
    """The start-time checks fail in every worker (the sink's table is missing): the
    supervisor does not restart them in a loop, it exits 2."""
    name = unique("wkbad")
    cfg = {
        "service": {"port": 0, "ops_port": 0},
        "pipelines": [
            {
                "name": name,
                "source": {"topics": [name]},
                "sinks": [{"postgres": {"table": name, "columns": {"id": ".id"}}}],
            }
        ],
        "topics": [{"name": name}],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(
        os.environ,
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value(),
        PYTHONPATH=str(ROOT),
    )
    log = tmp_path / "bad.log"
    proc = start(["run", "-c", str(path), "--workers", "2"], env, log)
    try:
        code = await asyncio.to_thread(proc.wait, 50)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 2, text[-3000:]
    assert f"table {name}" in text or name in text
    assert "refused its config (exit 2" in text
    assert "restarting it in" not in text
