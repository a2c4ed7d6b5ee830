"""A lane prepares batch N+1 (read, decode, steps) while batch N is written to
Postgres: the writes stay one at a time and in order, each recorded in the job
before the next starts, so rows, dedup and the resume point are as without the
overlap; a failed write of N leaves N+1 unwritten and the job resumable at N."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from eventpipe.connectors.sinks.postgres import PostgresSink
from eventpipe.pipelines.batch import BatchProcessor, SinkFailedError
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from tests.integration.test_backfill_support import backfill, event, make_topic
from tests.integration.test_pipeline_support import ident, sql, with_pipelines

N = 100
BATCH = 20


def spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "steps": [{"jq": "{n}"}],
        # no unique constraint: a second write of an event would be a second row
        "sinks": [{"postgres": {"table": name, "columns": {"event_id": ".id", "n": ".data.n"}}}],
        "batch": {"max_records": BATCH},
    }


async def one_partition_topic(settings: Settings, name: str) -> None:
    """N events, then e5 again (read in the second batch, while the first is written)."""
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (event_id text not null, n int not null)")
    await make_topic(settings, name, partitions=1)
    async with Publisher(settings) as pub:
        await pub.publish_batch(name, [event(i) for i in range(N)])
        await pub.publish_batch(name, [event(5)])


def timeline(
    monkeypatch: pytest.MonkeyPatch,
    log: list[tuple[str, float]],
    on_write: Callable[[int], Awaitable[None]],
) -> None:
    """Record when each batch is prepared and when each sink write starts and ends;
    ``on_write(n)`` runs inside the n-th write's transaction, before its COPY."""
    prepare, write = BatchProcessor.prepare, PostgresSink._write

    def spy_prepare(self: BatchProcessor, records: Any, pending: Any = ()) -> Any:
        log.append(("prepare", time.monotonic()))
        return prepare(self, records, pending)

    async def slow_write(self: PostgresSink, conn: Any, rows: list[list[Any]]) -> None:
        n = sum(1 for k, _ in log if k == "write")
        log.append(("write", time.monotonic()))
        await on_write(n + 1)
        await write(self, conn, rows)
        log.append(("written", time.monotonic()))

    monkeypatch.setattr(BatchProcessor, "prepare", spy_prepare)
    monkeypatch.setattr(PostgresSink, "_write", slow_write)


async def staged(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    on_write: Callable[[int], Awaitable[None]],
) -> tuple[str, str, list[tuple[str, float]]]:
    """A topic and table named ``prefix_...``, and the timeline's log."""
    name = ident(prefix)
    await one_partition_topic(settings, name)
    log: list[tuple[str, float]] = []
    timeline(monkeypatch, log, on_write)
    return name, settings.database.url.get_secret_value(), log


async def progress(url: str, name: str) -> list[tuple[Any, ...]]:
    return await sql(
        url,
        "select j.status, p.next_offset, p.done from eventpipe.backfill_jobs j "
        "join eventpipe.backfill_progress p on p.job_id = j.id where j.pipeline = %s",
        (name,),
    )


@pytest.mark.timeout(120)
async def test_a_slow_write_overlaps_the_next_batch_and_keeps_order_and_exactly_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow(_: int) -> None:
        await asyncio.sleep(0.3)

    name, url, log = await staged(settings, monkeypatch, "overlap", slow)
    report = await backfill(
        with_pipelines(settings, spec(name)), pipeline=name, start="10m", end="now", mode="live"
    )

    c = report["counts"]
    assert report["status"] == "completed"
    assert (c["read"], c["delivered"], c["duplicates"]) == (N + 1, N, 1)
    total, distinct, lo, hi = (
        await sql(url, f"select count(*), count(distinct event_id), min(n), max(n) from {name}")
    )[0]
    assert (total, distinct, lo, hi) == (N, N, 0, N - 1)
    assert await progress(url, name) == [("completed", N + 1, True)]
    starts = [t for k, t in log if k == "write"]
    ends = [t for k, t in log if k == "written"]
    assert len(starts) == len(ends) == N // BATCH  # the last batch, e5 again, writes no row
    # one write at a time, in order
    assert all(ends[i] <= starts[i + 1] for i in range(len(starts) - 1))
    # a batch was prepared before the write of the one ahead of it had ended
    prepared = [t for k, t in log if k == "prepare"]
    assert any(prepared[i + 1] < ends[i] for i in range(len(ends)))


@pytest.mark.timeout(120)
async def test_a_failed_write_does_not_commit_the_batch_prepared_behind_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def second_fails(n: int) -> None:
        if n == 2:
            await asyncio.sleep(0.5)  # the third batch is prepared meanwhile
            raise RuntimeError("the second write fails")

    name, url, log = await staged(settings, monkeypatch, "overlapfail", second_fails)
    s = with_pipelines(settings, spec(name))
    with pytest.raises(SinkFailedError, match="the second write fails"):
        # its own task: Python 3.11's TaskGroup leaves a failed run's caller cancelling
        await asyncio.create_task(backfill(s, pipeline=name, start="10m", end="now", mode="live"))

    assert sum(1 for k, _ in log if k == "prepare") >= 3
    assert sum(1 for k, _ in log if k == "write") == 2
    rows = await sql(url, f"select n from {name} order by n")
    assert [r[0] for r in rows] == list(range(BATCH))
    assert await progress(url, name) == [("failed", BATCH, False)]

    monkeypatch.undo()
    job = await sql(url, "select id from eventpipe.backfill_jobs where pipeline = %s", (name,))
    report = await backfill(s, pipeline=None, start=None, end=None, resume=job[0][0])
    assert report["status"] == "completed"
    total, distinct = (await sql(url, f"select count(*), count(distinct event_id) from {name}"))[0]
    assert (total, distinct) == (N, N)
    assert await progress(url, name) == [("completed", N + 1, True)]
