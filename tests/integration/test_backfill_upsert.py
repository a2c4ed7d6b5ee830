"""A live backfill into an upsert sink next to the live pipeline: with an ordering
column the rows the live pipeline wrote from newer events stay; without one the
backfill refuses to start unless told ``--allow-overwrite``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from eventpipe.backfill.options import BackfillArgumentError
from eventpipe.envelope import CloudEvent
from eventpipe.settings import Settings
from tests.integration.test_backfill_support import (
    HOUR_MS,
    backfill,
    iso,
    make_topic,
    now_ms,
    produce_at,
)
from tests.integration.test_pipeline_support import ident, running, sql, wait_rows, with_pipelines


def amount(key: str, value: int, ts: int) -> CloudEvent:
    return CloudEvent.create(
        "shop.balance",
        "/shop",
        {"k": key, "amount": value},
        id=f"{key}@{ts}",
        time=datetime.fromtimestamp(ts / 1000, UTC),
        partitionkey=key,
    )


def spec(name: str, **sink: Any) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"topics": [name], "partitions": 3},
        "steps": [{"jq": "{k, amount}"}],
        "sinks": [
            {
                "postgres": {
                    "table": name,
                    "mode": "upsert",
                    "key": ["k"],
                    "columns": {"k": ".data.k", "amount": ".data.amount", "at": ".time"},
                    **sink,
                }
            }
        ],
    }


async def live_history(settings: Settings, name: str, keys: int) -> tuple[int, int]:
    """Each key at amount 1 (t1), then 5 (t5 = t1 + 1h), through the running live
    pipeline.  Returns (t1, t5) in ms."""
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (k text primary key, amount int, at timestamptz)")
    await make_topic(settings, name)
    t1 = (now_ms() - 2 * HOUR_MS) // 1000 * 1000
    t5 = t1 + HOUR_MS
    old = [(i % 3, t1, amount(f"k{i}", 1, t1)) for i in range(keys)]
    new = [(i % 3, t5, amount(f"k{i}", 5, t5)) for i in range(keys)]
    async with running(with_pipelines(settings, spec(name, order_by="at"))):
        await produce_at(settings, name, old + new)
        query = f"select count(*) from {name} where amount = 5"
        assert await wait_rows(url, query, keys) == keys
    return t1, t5


async def test_a_live_backfill_does_not_roll_upsert_rows_back_with_an_ordering_column(
    settings: Settings,
) -> None:
    name = ident("guard")
    url = settings.database.url.get_secret_value()
    t1, _ = await live_history(settings, name, 30)
    # the range holds only the old events: without the guard they would win
    report = await backfill(
        with_pipelines(settings, spec(name, order_by="at")),
        pipeline=name,
        start=iso(t1 - 60_000),
        end=iso(t1 + 60_000),
        mode="live",
    )
    assert report["status"] == "completed"
    assert report["counts"]["read"] == 30 and report["counts"]["delivered"] == 30
    rows = await sql(url, f"select amount, count(*) from {name} group by amount")
    assert rows == [(5, 30)]


async def test_a_live_backfill_into_an_upsert_sink_without_a_guard_needs_allow_overwrite(
    settings: Settings,
) -> None:
    name = ident("noguard")
    url = settings.database.url.get_secret_value()
    t1, _ = await live_history(settings, name, 6)
    unguarded = with_pipelines(settings, spec(name))
    window = {"pipeline": name, "start": iso(t1 - 60_000), "end": iso(t1 + 60_000)}
    with pytest.raises(BackfillArgumentError, match="--allow-overwrite") as exc:
        await backfill(unguarded, mode="live", **window)
    assert "order_by" in str(exc.value) and "sinks[0]" in str(exc.value)
    assert await sql(url, f"select amount, count(*) from {name} group by amount") == [(5, 6)]
    jobs = await sql(
        url, "select count(*) from eventpipe.backfill_jobs where pipeline = %s", [name]
    )
    assert jobs == [(0,)]  # refused before a job was created
    # dry runs and shadow runs write nothing, so they need no guard
    assert (await backfill(unguarded, mode="dry_run", **window))["status"] == "completed"
    # told to, it overwrites: the old amounts come back, as asked
    report = await backfill(unguarded, mode="live", allow_overwrite=True, **window)
    assert report["counts"]["delivered"] == 6
    assert await sql(url, f"select amount, count(*) from {name} group by amount") == [(1, 6)]
