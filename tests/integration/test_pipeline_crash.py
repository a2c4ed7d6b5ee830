"""Exactly-once effect into Postgres, proven by killing the worker (SIGKILL) at
random points while it writes, and restarting it: every event ends up in the
table exactly once (ARCHITECTURE.md section 5)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from eventpipe.envelope import CloudEvent
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from tests.integration.test_pipeline_support import (
    ident,
    kill9,
    sql,
    start_worker,
    stop,
    write_config,
)

N = 20_000
KILLS = 5


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_kill9_five_times_postgres_holds_each_event_once(
    settings: Settings, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    name = ident("crash")
    url = settings.database.url.get_secret_value()
    # No unique constraint: a duplicate write would show up as a second row.
    await sql(
        url, f"create table {name} (event_id text not null, n int not null, part int, off bigint)"
    )
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 3, "session_timeout": "6s"},
        "steps": [{"jq": '{n: .n, tag: "crash"}'}],
        "sinks": [{"postgres": {"table": name, "columns": {"event_id": ".id", "n": ".data.n"}}}],
        "state": {"dedup_window": 0},
        "batch": {"max_records": 500, "within": "20ms"},
    }
    cfg = write_config(tmp_path / "crash.yaml", settings, [pipeline])
    log = tmp_path / "worker.log"
    events = [
        CloudEvent.create("crash.test", "/crash", {"n": i}, id=f"e{i}", partitionkey=str(i % 97))
        for i in range(N)
    ]
    async with Publisher(settings) as pub:
        from eventpipe.kafka.admin import TopicAdmin
        from eventpipe.settings import TopicSpec

        async with TopicAdmin(settings.kafka) as admin:
            await admin.ensure_topics([TopicSpec(name=name, partitions=3)])
        await pub.publish_batch(name, events)

    count_sql = f"select count(*) from {name}"
    kills = 0
    proc = start_worker(cfg, settings, log)
    started = time.monotonic()
    try:
        while kills < KILLS:
            before = int((await sql(url, count_sql))[0][0])
            # Kill once it wrote a random number more rows (i.e. mid-stream), or after a
            # random time once it is writing.
            target = before + rng.randrange(200, 2500)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while loop.time() < deadline:
                n = int((await sql(url, count_sql))[0][0])
                if n >= target or n >= N:
                    break
                assert proc.poll() is None, log.read_text()[-3000:]
                await asyncio.sleep(rng.uniform(0.005, 0.05))
            if n >= N:
                break  # all done before the last kill: nothing left to interrupt
            kill9(proc)
            kills += 1
            proc = start_worker(cfg, settings, log)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while loop.time() < deadline:
            n = int((await sql(url, count_sql))[0][0])
            if n >= N:
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)  # anything duplicated late would show up now
    finally:
        stop(proc)
    total, distinct, lo, hi = (
        await sql(url, f"select count(*), count(distinct event_id), min(n), max(n) from {name}")
    )[0]
    assert kills >= 3, f"only {kills} kills happened mid-stream (seed {seed})"
    assert (total, distinct) == (N, N), (
        f"seed {seed}: {total} rows, {distinct} distinct; {KILLS} kills; "
        f"{time.monotonic() - started:.0f}s\n{log.read_text()[-2000:]}"
    )
    assert (lo, hi) == (0, N - 1)
