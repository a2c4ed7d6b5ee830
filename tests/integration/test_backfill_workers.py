"""A backfill over worker processes (``--workers``): the same result as one process,
progress and report summed over the workers, and resumable after the coordinator
is killed (its workers stop; ``--resume`` finishes the job, each event once)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from tests.integration.test_backfill_resume import kill9_mid_run, resume
from tests.integration.test_backfill_support import backfill, event, make_topic
from tests.integration.test_pipeline_support import ident, sql, with_pipelines, write_config

N = 4000


def spec(topic: str, table: str, **over: Any) -> dict[str, Any]:
    """A pipeline named as its table (its delivery ledger is its own) reading ``topic``."""
    return {
        "name": table,
        "source": {"topics": [topic], "partitions": 4},
        "steps": [{"jq": "{n}"}, {"filter": ".data.n % 10 != 3"}],
        "sinks": [{"postgres": {"table": table, "columns": {"event_id": ".id", "n": ".data.n"}}}],
        "batch": {"max_records": 200},
        **over,
    }


async def filled(settings: Settings, name: str, n: int) -> None:
    await make_topic(settings, name, partitions=4)
    async with Publisher(settings) as pub:
        for i in range(0, n, 1000):
            await pub.publish_batch(name, [event(k) for k in range(i, min(n, i + 1000))])


async def test_two_workers_give_what_one_process_gives(settings: Settings) -> None:
    name = ident("workers")
    url = settings.database.url.get_secret_value()
    for t in (f"{name}_one", f"{name}_two"):
        # no unique constraint: a duplicate write would be a second row
        await sql(url, f"create table {t} (event_id text not null, n int not null)")
    await filled(settings, name, N)
    window = {"start": "15m", "end": "now", "mode": "live"}
    s = with_pipelines(settings, spec(name, f"{name}_one"), spec(name, f"{name}_two"))
    one = await backfill(s, pipeline=f"{name}_one", **window)
    two = await backfill(s, pipeline=f"{name}_two", workers=2, **window)
    assert (one["workers"], two["workers"]) == (1, 2)
    assert one["counts"] == two["counts"]
    assert two["counts"]["read"] == N and two["counts"]["filtered"] == N // 10
    assert all(p["done"] for p in two["partitions"]) and len(two["partitions"]) == 4
    assert [(p["stream"], p["partition"], p["read"]) for p in one["partitions"]] == [
        (p["stream"], p["partition"], p["read"]) for p in two["partitions"]
    ]
    assert len(two["peak_rss_mb"]["workers"]) == 2
    assert len(two["cpu_s"]["workers"]) == 2 and min(two["cpu_s"]["workers"]) > 0
    assert two["stage_seconds"]["decode"] > 0 and "sink postgres" in two["stage_seconds"]
    rows = {}
    for t in (f"{name}_one", f"{name}_two"):
        rows[t] = await sql(url, f"select count(*), count(distinct event_id), sum(n) from {t}")
    assert rows[f"{name}_one"] == rows[f"{name}_two"]
    assert rows[f"{name}_two"][0][:2] == (N - N // 10, N - N // 10)

    # a dry run over workers: the same counts, samples from them within the limit
    dry = await backfill(
        s,
        pipeline=f"{name}_one",
        **{**window, "mode": "dry_run"},
        workers="auto",
        samples=7,
    )
    assert dry["counts"]["read"] == N and dry["counts"]["delivered"] == N - N // 10
    assert len(dry["samples"]["outputs"]["postgres"]) == 7


@pytest.mark.timeout(180)
async def test_kill9_of_the_coordinator_then_resume_with_workers(
    settings: Settings, tmp_path: Path
) -> None:
    name = ident("wresume")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (event_id text not null, n int not null)")
    n = 6000
    await filled(settings, name, n)
    cfg = write_config(tmp_path / "backfill.yaml", settings, [spec(name, name, steps=[])])
    base = [sys.executable, "-m", "eventpipe", "backfill", "-c", str(cfg), "--no-progress"]
    err = tmp_path / "first.err"
    first = ["--pipeline", name, "--from", "15m", "--to", "now", "--mode", "live"]
    first += ["--rate", "1500/s", "--workers", "2", "--json"]
    count = f"select count(*) from {name}"
    job = await kill9_mid_run([*base, *first], settings, err, count, total=n)
    # the orphaned workers notice and stop: the row count settles
    await asyncio.sleep(3)
    settled = int((await sql(url, count))[0][0])
    await asyncio.sleep(2)
    assert int((await sql(url, count))[0][0]) == settled < n

    _, report = await resume([*base, "--resume", job, "--workers", "2"], settings, tmp_path)
    c = report["counts"]
    assert report["status"] == "completed" and report["runs"] == 2 and report["workers"] == 2
    assert c["read"] == n and c["delivered"] + c["duplicates"] == n
    total, distinct = (await sql(url, f"select count(*), count(distinct event_id) from {name}"))[0]
    assert (total, distinct) == (n, n)


async def test_a_run_holds_a_bounded_window_of_records_and_dedup_keys(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventpipe.backfill import modes

    monkeypatch.setattr(modes, "DEDUP_KEYS", 500)
    name = ident("window")
    await filled(settings, name, N)
    # the topic holds every event twice, the copies far apart (past the dedup bound)
    async with Publisher(settings) as pub:
        await pub.publish_batch(name, [event(k) for k in range(100)])
    pipeline = spec(name, name, sinks=[{"topic": {"topic": f"{name}.out"}}])
    pipeline["batch"] = {"max_records": 100}
    pipeline["state"] = {"dedup_window": "1h"}
    s = with_pipelines(settings, pipeline)
    report = await backfill(s, pipeline=name, start="15m", end="now", concurrency=2)
    assert report["counts"]["read"] == N + 100
    window = report["window"]
    assert window["limit"] == 200  # --concurrency x batch.max_records
    assert 0 < window["records"] <= 200
    assert 0 < window["dedup_keys"] <= 500
    # the copies were further apart than the bound: they went through (not deduped)
    assert report["counts"]["duplicates"] == 0


async def test_a_table_is_shared_by_workers_in_key_ranges(settings: Settings) -> None:
    table = ident("wtable")
    source = ident("shop")
    url = settings.database.url.get_secret_value()
    await sql(
        url,
        f"create table {table} (region text, id int, total int, updated_at timestamptz not null, "
        "primary key (region, id))",
    )
    await sql(
        url,
        f"insert into {table} select r, i, i, now() - interval '1h' "
        "from unnest(array['eu', 'us']) r, generate_series(1, 150) i",
    )
    for t in (f"{table}_one", f"{table}_two"):
        await sql(url, f"create table {t} (event_id text not null, region text, id int)")

    def pipeline(out: str) -> dict[str, Any]:
        return {
            "name": out,
            "source": {"topics": [f"{source}.public.{table}"]},
            "steps": [{"jq": "{region: .after.region, id: .after.id}"}],
            "sinks": [
                {
                    "postgres": {
                        "table": out,
                        "columns": {"event_id": ".id", "region": ".data.region", "id": ".data.id"},
                    }
                }
            ],
            "batch": {"max_records": 40},
        }

    s = with_pipelines(settings, pipeline(f"{table}_one"), pipeline(f"{table}_two")).model_copy(
        update={
            "sources": [{"type": "postgres_cdc", "name": source, "tables": [f"public.{table}"]}]
        }
    )
    kw = {"start": "2h", "end": "now", "mode": "live", "source": "table"}
    one = await backfill(s, pipeline=f"{table}_one", **kw)
    two = await backfill(s, pipeline=f"{table}_two", workers=2, **kw)
    assert [p["partition"] for p in one["partitions"]] == [-1]
    assert sorted(p["partition"] for p in two["partitions"]) == [-2, -1]
    assert two["workers"] == 2 and [p["read"] for p in two["partitions"]] == [150, 150]
    assert one["counts"] == two["counts"] and two["counts"]["delivered"] == 300
    for t in (f"{table}_one", f"{table}_two"):
        got = await sql(url, f"select count(*), count(distinct (region, id)) from {t}")
        assert got == [(300, 300)], t
