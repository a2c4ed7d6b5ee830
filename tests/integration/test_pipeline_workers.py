"""Two workers in one consumer group, with events flowing: the first worker is
processing when a second one joins (a rebalance splits the partitions), and it
leaves gracefully once the second one reads (a rebalance hands everything over).
Every event is handled once -- one row in Postgres, one record on the output
topic -- and re-sent duplicates are dropped by the dedup table.  (Before the
source reader, faust's channel queue dropped a few records around a rebalance and
the postgres sink's high-water mark skipped them for good.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eventpipe.envelope import CloudEvent
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings, TopicSpec
from tests.helpers import read_records
from tests.integration.test_pipeline_support import (
    ident,
    sql,
    start_worker,
    stop,
    wait_rows,
    write_config,
)

N = 3000


def log_text(log: Path) -> str:
    return log.read_text() if log.exists() else ""


async def wait_reading(log: Path, name: str, timeout: float = 60.0) -> None:
    """Until the worker logging to ``log`` reads partitions of ``name``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if f"pipeline source: reading {name}[" in log_text(log):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no worker read {name}:\n{log_text(log)[-2000:]}")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_two_workers_rebalance_each_event_once(settings: Settings, tmp_path: Path) -> None:
    name = ident("scale")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (event_id text not null)")
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 4, "session_timeout": "6s"},
        "sinks": [
            {"postgres": {"table": name, "columns": {"event_id": ".id"}}},
            {"topic": {"topic": f"{name}.out"}},
        ],
        "state": {"dedup_window": "1h"},
        "batch": {"max_records": 100, "within": "20ms"},
    }
    cfg = write_config(tmp_path / "w.yaml", settings, [pipeline], log_level="INFO")
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=name, partitions=4)])
    events = [
        CloudEvent.create("t", "/scale", {"i": i}, id=f"s{i}", partitionkey=str(i))
        for i in range(N)
    ]
    count = f"select count(*) from {name}"
    logs = {w: tmp_path / f"{w}.log" for w in "ab"}
    a = start_worker(cfg, settings, logs["a"])
    b = None

    def tails() -> str:
        return "".join(log_text(p)[-3000:] for p in logs.values())

    try:
        async with Publisher(settings) as pub:
            await pub.publish_batch(name, events[:1000])
            # a is up and working before b joins
            assert await wait_rows(url, count, 1000, timeout=60) >= 1000, tails()

            async def publish_rest() -> None:
                for i in range(1000, N, 100):
                    await pub.publish_batch(name, events[i : i + 100])
                    if i == 2000:  # re-send a slice already processed: dedup drops it
                        await pub.publish_batch(name, events[:100])
                    await asyncio.sleep(0.6)  # ~12 s: both rebalances happen mid-stream

            publishing = asyncio.ensure_future(publish_rest())
            b = start_worker(cfg, settings, logs["b"])
            await wait_reading(logs["b"], name)  # rebalance 1: b joined, a still reads
            await asyncio.sleep(0.5)
            stop(a)  # rebalance 2: a leaves mid-stream, b takes everything
            await publishing
        assert await wait_rows(url, count, N, timeout=90) >= N, tails()
        # b read its half, then (after a left) all four partitions, while events flowed
        reads = [ln for ln in log_text(logs["b"]).splitlines() if "pipeline source: reading" in ln]
        assert len(reads) >= 2 and all(f"{name}[{p}]@" in reads[-1] for p in range(4)), reads
        await asyncio.sleep(2.0)
        out = await read_records(settings.kafka.bootstrap, f"{name}.out", N, timeout=30)
    finally:
        stop(a)
        if b is not None:
            stop(b)
    total, distinct = (await sql(url, f"select count(*), count(distinct event_id) from {name}"))[0]
    assert (total, distinct) == (N, N)
    ids = [dict(r.headers)["ce_id"].decode() for r in out]
    assert len(ids) == N and len(set(ids)) == N
