"""A live backfill killed with SIGKILL mid-run, then ``--resume``: every event ends up
in the sink exactly once (the CLI as a user runs it, in subprocesses)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventpipe.backfill.job import Job, JobLockedError, JobStore, new_job_id
from eventpipe.backfill.options import Mode
from eventpipe.db.pool import open_pool
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from tests.integration.test_backfill_support import event, make_topic
from tests.integration.test_pipeline_support import ROOT, ident, kill9, sql, write_config

N = 6000


def _env(settings: Settings) -> dict[str, str]:
    return dict(
        os.environ,
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value(),
        PYTHONPATH=str(ROOT),
    )


def _start(cmd: list[str], settings: Settings, err: Path) -> subprocess.Popen[bytes]:
    with err.open("wb") as err_file:
        return subprocess.Popen(
            cmd, env=_env(settings), stdout=subprocess.DEVNULL, stderr=err_file, cwd=err.parent
        )


async def kill9_mid_run(
    cmd: list[str],
    settings: Settings,
    err: Path,
    count: str,
    *,
    total: int,
    at_least: int = 1000,
    timeout: float = 60,
) -> str:
    """Start the backfill ``cmd``; kill -9 it once ``count`` (SQL) reaches ``at_least``
    rows, short of ``total``.  Returns the job's id."""
    url = settings.database.url.get_secret_value()
    proc = _start(cmd, settings, err)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        n = 0
        while loop.time() < deadline:
            n = int((await sql(url, count))[0][0])
            if n >= at_least:
                break
            assert proc.poll() is None, _text(err)[-3000:]
            await asyncio.sleep(0.05)
        assert at_least <= n < total, f"{n} rows when the kill was due\n{_text(err)[-2000:]}"
    finally:
        kill9(proc)
    found = re.search(r"backfill job (bf-[0-9a-f]{12})", _text(err))
    assert found, _text(err)
    return found.group(1)


async def resume(
    cmd: list[str], settings: Settings, cwd: Path, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[bytes], dict[str, Any]]:
    """Run the backfill ``cmd`` (a ``--resume``) to its end: it must succeed; its
    report."""
    r = await asyncio.to_thread(
        subprocess.run,
        [*cmd, "--json"],
        env=_env(settings),
        capture_output=True,
        timeout=timeout,
        cwd=str(cwd),
    )
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    return r, orjson.loads(r.stdout)


def _text(path: Path) -> str:
    return path.read_text()


@pytest.mark.timeout(120)
async def test_kill9_mid_backfill_then_resume_delivers_each_event_once(
    settings: Settings, tmp_path: Path
) -> None:
    name = ident("resume")
    url = settings.database.url.get_secret_value()
    # no unique constraint: a duplicate write would be a second row
    await sql(url, f"create table {name} (event_id text not null, n int not null)")
    await make_topic(settings, name)
    async with Publisher(settings) as pub:
        await pub.publish_batch(name, [event(i) for i in range(N)])
    spec = {
        "name": name,
        "source": {"topics": [name], "partitions": 3},
        "steps": [{"jq": "{n}"}],
        "sinks": [{"postgres": {"table": name, "columns": {"event_id": ".id", "n": ".data.n"}}}],
        "batch": {"max_records": 200},
    }
    cfg = write_config(tmp_path / "backfill.yaml", settings, [spec])
    base = [sys.executable, "-m", "eventpipe", "backfill", "-c", str(cfg), "--no-progress"]
    err = tmp_path / "first.err"
    first = ["--pipeline", name, "--from", "15m", "--to", "now", "--mode", "live"]
    first += ["--rate", "2000/s", "--concurrency", "3", "--json"]
    count = f"select count(*) from {name}"
    job = await kill9_mid_run([*base, *first], settings, err, count, total=N)
    status = await sql(url, "select status from eventpipe.backfill_jobs where id = %s", (job,))
    assert status == [("running",)]  # killed: nobody recorded an end
    assert int((await sql(url, count))[0][0]) < N

    r, report = await resume([*base, "--resume", job], settings, tmp_path)
    c = report["counts"]
    assert report["status"] == "completed" and report["runs"] == 2
    assert c["read"] == N and c["delivered"] + c["duplicates"] == N and c["dead_lettered"] == 0
    total, distinct, lo, hi = (
        await sql(url, f"select count(*), count(distinct event_id), min(n), max(n) from {name}")
    )[0]
    assert (total, distinct, lo, hi) == (N, N, 0, N - 1)
    assert await sql(url, "select status from eventpipe.backfill_jobs where id = %s", (job,)) == [
        ("completed",)
    ]
    marks = await sql(
        url, "select count(*) from eventpipe.sink_offsets where sink like %s", (f"{name}@%",)
    )
    assert marks[0][0] == 0

    # resuming a completed job only shows its report
    r, again = await resume([*base, "--resume", job], settings, tmp_path)
    assert "was completed before" in r.stderr.decode() and again["counts"] == c


async def test_one_process_per_job_and_one_live_backfill_per_pipeline(settings: Settings) -> None:
    url = settings.database.url.get_secret_value()
    pool = await open_pool(settings.database)
    try:
        a, b = JobStore(pool, url), JobStore(pool, url)

        def job(mode: Mode) -> Job:
            t = datetime.now(UTC)
            return Job(new_job_id(), "orders", mode, "topic", t, t, t)

        live = job("live")
        async with a.hold(live):
            with pytest.raises(JobLockedError, match=f"job {live.id} is running in another"):
                async with b.hold(live):
                    pass
            with pytest.raises(JobLockedError, match="a live backfill of pipeline 'orders'"):
                async with b.hold(job("live")):
                    pass
            async with b.hold(job("dry_run")), b.hold(job("shadow")):
                pass  # those may run next to it
        async with b.hold(live):  # released
            pass
    finally:
        await pool.close()
