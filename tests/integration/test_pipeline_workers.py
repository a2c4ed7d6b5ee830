"""Two workers in one consumer group: a second worker joins mid-stream and the first
leaves (two rebalances); every event is handled once -- one row in Postgres, one
record on the output topic -- and re-sent duplicates are dropped by the dedup table."""

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
    cfg = write_config(tmp_path / "w.yaml", settings, [pipeline])
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=name, partitions=4)])
    events = [CloudEvent.create("t", "/scale", {"i": i}, id=f"s{i}", partitionkey=str(i))
              for i in range(N)]
    count = f"select count(*) from {name}"
    a = start_worker(cfg, settings, tmp_path / "a.log")
    b = None
    try:
        async with Publisher(settings) as pub:
            for i in range(0, N, 100):
                chunk = events[i : i + 100]
                await pub.publish_batch(name, chunk)
                if i == 1000:
                    b = start_worker(cfg, settings, tmp_path / "b.log")
                if i == 2000:
                    # re-send a slice already processed: dedup must drop it
                    await pub.publish_batch(name, events[:100])
                    stop(a)  # graceful leave: the group rebalances onto b
                await asyncio.sleep(0.2)
        assert b is not None
        assert await wait_rows(url, count, N, timeout=90) >= N, (
            (tmp_path / "a.log").read_text()[-2000:] + (tmp_path / "b.log").read_text()[-2000:]
        )
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
