"""The postgres sink's transaction on the real database: the mark rows are locked
for the whole transaction (a second writer of the same partitions waits, then
skips what the first wrote), and a batch PostgreSQL refuses is written again row
by row, keeping the good rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from eventpipe.connectors.sinks.postgres import (
    SMALL_BATCH_ROWS,
    PostgresSink,
    PostgresSinkConfig,
    RowRejectedError,
)
from eventpipe.context import Context
from eventpipe.envelope import CloudEvent
from eventpipe.settings import Settings
from eventpipe.sink import DeliveryItem
from tests.integration.test_pipeline_support import ident, sql


class HeldSink(PostgresSink):
    """Stops inside its transaction (after the rows, before the marks) until released."""

    inside: asyncio.Event
    release: asyncio.Event

    async def _also_write(
        self,
        conn: psycopg.AsyncConnection[Any],
        items: Sequence[DeliveryItem],
        failed: dict[int, BaseException],
    ) -> None:
        self.inside.set()
        await self.release.wait()


@pytest.fixture
async def opened() -> AsyncIterator[list[PostgresSink]]:
    sinks: list[PostgresSink] = []
    try:
        yield sinks
    finally:
        for s in sinks:
            await s.close()


def items(topic: str, offsets: range, totals: dict[int, int] | None = None) -> list[DeliveryItem]:
    totals = totals or {}
    return [
        DeliveryItem(
            n,
            [CloudEvent.create("t", "/marks", {"n": o, "total": totals.get(o, 1)}, id=f"e{o}")],
            topic,
            0,
            o,
        )
        for n, o in enumerate(offsets)
    ]


async def make_sink(
    cls: type[PostgresSink],
    settings: Settings,
    pool: AsyncConnectionPool,
    table: str,
    opened: list[PostgresSink],
) -> PostgresSink:
    cfg = PostgresSinkConfig.model_validate(
        {"table": table, "columns": {"event_id": ".id", "n": ".data.n", "total": ".data.total"}}
    )
    sink = cls(cfg, name="pg")
    sink.bind("marks-test", Context(settings, None, None, pool))  # type: ignore[arg-type]
    await sink.start()
    opened.append(sink)
    return sink


async def checked_table(settings: Settings) -> tuple[str, str, str]:
    """A new table that refuses a total of 100 or more: (database url, table, topic)."""
    url = settings.database.url.get_secret_value()
    table, topic = ident("marks"), ident("topic")
    await sql(
        url,
        f"create table {table} (event_id text primary key, n int, total int check (total < 100))",
    )
    return url, table, topic


async def test_a_second_writer_waits_for_the_marks_then_skips_what_was_written(
    settings: Settings, pool: AsyncConnectionPool, opened: list[PostgresSink]
) -> None:
    url = settings.database.url.get_secret_value()
    table, topic = ident("marks"), ident("topic")
    await sql(url, f"create table {table} (event_id text primary key, n int, total int)")
    first = await make_sink(HeldSink, settings, pool, table, opened)
    assert isinstance(first, HeldSink)
    first.inside, first.release = asyncio.Event(), asyncio.Event()
    second = await make_sink(PostgresSink, settings, pool, table, opened)

    one = asyncio.ensure_future(first.deliver(items(topic, range(100))))
    await asyncio.wait_for(first.inside.wait(), 10)
    # The same offsets again, as a worker that lost the partition in a rebalance would.
    two = asyncio.ensure_future(second.deliver(items(topic, range(100))))
    await asyncio.sleep(0.5)
    assert not two.done(), "the second writer did not wait for the first one's marks"
    first.release.set()
    assert await asyncio.wait_for(one, 10) == {}
    assert await asyncio.wait_for(two, 10) == {}

    assert await sql(url, f"select count(*), min(n), max(n) from {table}") == [(100, 0, 99)]
    marks = await sql(url, 'select "offset" from eventpipe.sink_offsets where topic = %s', [topic])
    assert marks == [(99,)]


async def test_a_refused_batch_is_written_row_by_row_and_keeps_the_good_rows(
    settings: Settings, pool: AsyncConnectionPool, opened: list[PostgresSink]
) -> None:
    url, table, topic = await checked_table(settings)
    sink = await make_sink(PostgresSink, settings, pool, table, opened)
    batch = items(topic, range(50), totals={7: 500, 31: 900})

    failed = await sink.deliver(batch)

    assert sorted(failed) == [7, 31]
    assert all(isinstance(e, RowRejectedError) for e in failed.values())
    assert "CheckViolation" in str(failed[7])
    rows = await sql(url, f"select n from {table} order by n")
    assert [r[0] for r in rows] == [o for o in range(50) if o not in (7, 31)]
    marks = await sql(url, 'select "offset" from eventpipe.sink_offsets where topic = %s', [topic])
    assert marks == [(49,)]


@pytest.mark.parametrize("size", [1, 2, 10, SMALL_BATCH_ROWS, SMALL_BATCH_ROWS + 1])
async def test_a_refused_small_batch_is_written_row_by_row_too(
    settings: Settings, pool: AsyncConnectionPool, opened: list[PostgresSink], size: int
) -> None:
    """A batch of up to SMALL_BATCH_ROWS goes in pipeline mode (a larger one by COPY);
    its refusal must roll the transaction back too, so the row-by-row retry finds the
    bad row."""
    url, table, topic = await checked_table(settings)
    sink = await make_sink(PostgresSink, settings, pool, table, opened)
    bad = size - 1
    for rnd in range(5):  # batch after batch on the same connection pool
        base = rnd * size
        batch = items(topic, range(base, base + size), totals={base + bad: 500})

        failed = await sink.deliver(batch)

        assert sorted(failed) == [bad], rnd
        assert isinstance(failed[bad], RowRejectedError) and "CheckViolation" in str(failed[bad])
    rows = await sql(url, f"select n from {table} order by n")
    assert [r[0] for r in rows] == [o for o in range(5 * size) if o % size != bad]
    marks = await sql(url, 'select "offset" from eventpipe.sink_offsets where topic = %s', [topic])
    assert marks == [(5 * size - 1,)]
