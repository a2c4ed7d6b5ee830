"""A backfill meeting poison records that are already in the dead-letter topic (the
live pipeline's, or an earlier backfill's, replayed or not): it recognises them by
their origin and reports them, instead of dead-lettering them again as new."""

from __future__ import annotations

import asyncio
from typing import Any

from eventpipe.db.pool import open_pool
from eventpipe.dlq.ops import Dlq
from eventpipe.dlq.reader import Entry, read_snapshot
from eventpipe.settings import Settings
from tests.integration.test_backfill_support import (
    backfill,
    event,
    iso,
    make_topic,
    now_ms,
    produce_at,
)
from tests.integration.test_pipeline_support import ident, running, sql, wait_rows, with_pipelines


async def letters(settings: Settings, topic: str) -> list[Entry]:
    return [e async for e in read_snapshot(settings.kafka, [topic])]


async def test_poison_already_dead_lettered_is_reported_not_dead_lettered_again(
    settings: Settings,
) -> None:
    name = ident("poison")
    dlq = f"{name}.dlq"
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (event_id text primary key, n int)")
    await make_topic(settings, name)
    spec: dict[str, Any] = {
        "name": name,
        "source": {"topics": [name], "partitions": 3},
        "steps": [{"jq": "{n: (.n + 1)}"}],  # a string n fails here
        "sinks": [
            {
                "postgres": {
                    "table": name,
                    "mode": "upsert",
                    "key": ["event_id"],
                    "columns": {"event_id": ".id", "n": ".data.n"},
                }
            }
        ],
        "retry": {"max_attempts": 2, "initial": "10ms", "max": "50ms"},
    }
    s = with_pipelines(settings, spec)
    t0 = now_ms() - 120_000
    poison = event(99, n="x")
    items = [(i % 3, t0 + i, event(i)) for i in range(9)] + [(1, t0 + 50, poison)]
    async with running(s):
        await produce_at(settings, name, items)
        assert await wait_rows(url, f"select count(*) from {name}", 9) == 9
        for _ in range(100):
            if await letters(settings, dlq):
                break
            await asyncio.sleep(0.1)
    first = await letters(settings, dlq)
    assert [e.event_id for e in first] == ["e99"]  # the live pipeline's dead letter
    window = {"pipeline": name, "start": iso(t0 - 1000), "end": iso(t0 + 1000)}

    report = await backfill(s, mode="live", allow_overwrite=True, **window)
    c = report["counts"]
    assert (c["read"], c["delivered"]) == (10, 9)
    assert (c["dead_lettered"], c["already_dead_lettered"], c["already_replayed"]) == (0, 1, 0)
    assert len(await letters(settings, dlq)) == 1  # not written again

    # a dry run tells the same apart
    dry = (await backfill(s, mode="dry_run", **window))["counts"]
    assert (dry["dead_lettered"], dry["already_dead_lettered"]) == (0, 1)

    # replayed (still poison: the live pipeline is stopped, so nothing reads it yet)
    pool = await open_pool(settings.database)
    try:
        replay = await Dlq(s, pool).replay([dlq], first)
        assert replay.replayed == 1
    finally:
        await pool.close()
    again = (await backfill(s, mode="live", allow_overwrite=True, **window))["counts"]
    assert (again["dead_lettered"], again["already_dead_lettered"]) == (0, 1)
    assert again["already_replayed"] == 1
    assert len(await letters(settings, dlq)) == 1


async def test_new_poison_is_dead_lettered_once_over_reruns(settings: Settings) -> None:
    name = ident("poison2")
    dlq = f"{name}.dlq"
    await make_topic(settings, name)
    spec: dict[str, Any] = {
        "name": name,
        "source": {"topics": [name], "partitions": 3},
        "steps": [{"jq": "{n: (.n + 1)}"}],
        "sinks": [{"topic": {"topic": f"{name}.out"}}],
        "retry": {"max_attempts": 2, "initial": "10ms", "max": "50ms"},
    }
    s = with_pipelines(settings, spec)
    t0 = now_ms() - 60_000
    await produce_at(
        settings, name, [(0, t0, event(1)), (0, t0 + 1, event(2, n="x")), (2, t0 + 2, event(3))]
    )
    window = {"pipeline": name, "start": iso(t0 - 1000), "end": iso(t0 + 1000), "mode": "live"}
    c1 = (await backfill(s, **window))["counts"]
    assert (c1["dead_lettered"], c1["already_dead_lettered"]) == (1, 0)
    c2 = (await backfill(s, **window))["counts"]
    assert (c2["dead_lettered"], c2["already_dead_lettered"], c2["duplicates"]) == (0, 1, 2)
    got = await letters(settings, dlq)
    assert [(e.event_id, e.letter.origin.offset) for e in got] == [("e2", 1)]


async def test_table_rows_that_failed_before_are_recognised_by_event_id(
    settings: Settings,
) -> None:
    table = ident("tpoison")
    source = ident("shop")
    url = settings.database.url.get_secret_value()
    await sql(
        url, f"create table {table} (id int primary key, v text, updated_at timestamptz not null)"
    )
    await sql(
        url,
        f"insert into {table} values (1, '10', now() - interval '2h'), "
        "(2, 'x', now() - interval '2h'), (3, '30', now() - interval '2h')",
    )
    pipeline = {
        "name": table,
        "source": {"topics": [f"{source}.public.{table}"]},
        "steps": [{"jq": "{id: .after.id, v: (.after.v | tonumber)}"}],
        "sinks": [{"topic": {"topic": f"{table}.out"}}],
        "retry": {"max_attempts": 2, "initial": "10ms", "max": "50ms"},
    }
    s = with_pipelines(settings, pipeline).model_copy(
        update={
            "sources": [{"type": "postgres_cdc", "name": source, "tables": [f"public.{table}"]}]
        }
    )
    kw = {"pipeline": table, "start": "3h", "end": "1h", "mode": "live", "source": "table"}
    c1 = (await backfill(s, **kw))["counts"]
    assert (c1["delivered"], c1["dead_lettered"], c1["already_dead_lettered"]) == (2, 1, 0)
    c2 = (await backfill(s, **kw))["counts"]
    assert (c2["duplicates"], c2["dead_lettered"], c2["already_dead_lettered"]) == (2, 0, 1)
    got = await letters(settings, f"{table}.dlq")
    assert len(got) == 1 and f"backfill:public.{table}:2@" in str(got[0].event_id)
