"""Backfill from topics: the time range, dry run, shadow comparison, and live mode
next to a real running pipeline."""

from __future__ import annotations

from typing import Any

from eventpipe.settings import Settings
from tests.integration.test_backfill_support import (
    HOUR_MS,
    backfill,
    event,
    iso,
    make_topic,
    now_ms,
    produce_at,
    topics,
)
from tests.integration.test_pipeline_support import ident, running, sql, wait_rows, with_pipelines


def pipeline(name: str, **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "source": {"topics": [name], "partitions": 3},
        "steps": [{"jq": "{n, total}"}],
        "sinks": [{"topic": {"topic": f"{name}.out"}}],
        "retry": {"max_attempts": 2, "initial": "10ms", "max": "50ms"},
    }
    spec.update(over)
    return spec


async def test_time_range_selects_exactly_the_records_inside_it_on_every_partition(
    settings: Settings,
) -> None:
    name = ident("range")
    await make_topic(settings, name)
    t1 = (now_ms() - 3 * HOUR_MS) // 1000 * 1000
    t2 = t1 + HOUR_MS
    # per partition, in offset order: (offset within partition) -> timestamp
    layout = [
        t1 - HOUR_MS,  # before
        t1 - 1,  # just before
        t1,  # first in range (inclusive)
        t1 + 60_000,
        t1 - 30 * 60_000,  # out of order: read past, but outside the range
        t2 - 1,  # last in range
        t2,  # the end (exclusive): the read stops here
        t2 - 5,  # after the end in offset order: not read
        t2 + HOUR_MS,
    ]
    inside = {2, 3, 5}
    items, expected = [], {0: set(), 1: set(), 2: set()}  # type: ignore[var-annotated]
    n = 0
    for k, ts in enumerate(layout):
        for p in range(3):
            items.append((p, ts, event(n)))
            if k in inside:
                expected[p].add(f"e{n}")
            n += 1
    await produce_at(settings, name, items)
    s = with_pipelines(settings, pipeline(name))
    report = await backfill(s, pipeline=name, start=iso(t1), end=iso(t2), samples=1000)

    assert report["status"] == "completed" and report["mode"] == "dry_run"
    outputs = report["samples"]["outputs"]["topic"]
    got: dict[int, set[str]] = {0: set(), 1: set(), 2: set()}
    for d in outputs:
        _, part, _ = d["origin"].rsplit(":", 2)
        got[int(part)].add(d["event"]["id"])
    assert got == expected
    for p in report["partitions"]:
        assert (p["read"], p["outside"], p["done"]) == (3, 3, True), p
        assert p["next"] == 6  # stopped at the first record at or past --to
    c = report["counts"]
    assert (c["read"], c["outputs"], c["delivered"], c["outside"]) == (9, 9, 9, 9)


async def test_dry_run_writes_nothing(settings: Settings) -> None:
    name = ident("dry")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (event_id text, n int)")
    await make_topic(settings, name)
    t0 = now_ms() - 60_000
    bad = event(99)
    bad.data = {"total": 1}  # no n: fails validate_input
    await produce_at(
        settings, name, [(i % 3, t0 + i, event(i)) for i in range(12)] + [(0, t0 + 20, bad)]
    )
    before = await topics(settings)
    spec = pipeline(
        name,
        validate_input={"schema": {"type": "object", "required": ["n"]}},
        sinks=[
            {"postgres": {"table": name, "columns": {"event_id": ".id", "n": ".data.n"}}},
            {"topic": {"topic": f"{name}.out"}},
        ],
    )
    report = await backfill(
        with_pipelines(settings, spec), pipeline=name, start="10m", end="now", mode="dry_run"
    )
    c = report["counts"]
    assert (c["read"], c["delivered"], c["dead_lettered"]) == (13, 12, 1)
    assert report["samples"]["dead_letters"][0]["stage"] == "validate"
    assert len(report["samples"]["outputs"]["postgres"]) == 5
    # nothing written: no rows, no output / dead-letter / shadow topic, no marks, no ledger
    assert (await sql(url, f"select count(*) from {name}"))[0][0] == 0
    assert {f"{name}.out", f"{name}.dlq", f"{name}.shadow"} & (await topics(settings)) == set()
    assert await topics(settings) - before == set()
    marks = await sql(
        url, "select count(*) from eventpipe.sink_offsets where sink like %s", (f"{name}%",)
    )
    ledger = await sql(
        url, "select count(*) from eventpipe.backfill_delivered where sink like %s", (f"{name}%",)
    )
    assert marks[0][0] == 0 and ledger[0][0] == 0


async def test_shadow_reports_a_changed_transform(settings: Settings) -> None:
    name = ident("shadow")
    await make_topic(settings, name)
    t0 = now_ms() - 60_000
    await produce_at(settings, name, [(i % 3, t0 + i, event(i)) for i in range(6)])
    # What the live pipeline produced: the old definition, run live into its topic sink.
    old = pipeline(name, steps=[{"jq": "{n, total}"}, {"filter": ".data.n != 3"}])
    live = await backfill(
        with_pipelines(settings, old), pipeline=name, start="10m", end="now", mode="live"
    )
    assert live["counts"]["delivered"] == 5
    new = pipeline(
        name,
        steps=[
            {"jq": "{n, total: (if .n >= 4 then .total + 1 else .total end)}"},
            {"filter": ".data.n != 5"},
        ],
    )
    report = await backfill(
        with_pipelines(settings, new), pipeline=name, start="10m", end="now", mode="shadow"
    )
    comp = report["comparison"]
    assert comp["live_topics"] == [f"{name}.out"]
    assert (comp["shadow"], comp["live"], comp["same"]) == (5, 5, 3)
    assert (comp["missing"], comp["extra"], comp["changed"]) == (1, 1, 1)
    ex = comp["examples"]
    assert [e["id"] for e in ex["missing"]] == ["e5"]  # the new filter drops it
    assert [e["id"] for e in ex["extra"]] == ["e3"]  # the old filter dropped it
    assert ex["changed"] == [
        {
            "id": "e4",
            "source": "/shop",
            "differences": [{"field": "data.total", "live": 40, "shadow": 41}],
        }
    ]
    assert report["counts"]["delivered"] == 5 and f"{name}.shadow" in await topics(settings)


async def test_live_backfill_next_to_a_live_pipeline_rerun_adds_no_duplicates(
    settings: Settings,
) -> None:
    name = ident("live")
    url = settings.database.url.get_secret_value()
    for t in (name, f"{name}_audit"):
        # no unique constraint: a duplicate write would be a second row
        await sql(url, f"create table {t} (event_id text not null, n int)")
    columns = {"event_id": ".id", "n": ".data.n"}
    v1 = pipeline(name, sinks=[{"postgres": {"table": name, "columns": columns}}])
    s1 = with_pipelines(settings, v1)
    await make_topic(settings, name)
    t0 = now_ms()
    async with running(s1):
        await produce_at(settings, name, [(i % 3, now_ms(), event(i)) for i in range(30)])
        assert await wait_rows(url, f"select count(*) from {name}", 30) == 30
    # A sink added later: the backfill must deliver history to it, and not again to the
    # first sink, whose live marks it must neither trust blindly nor duplicate.
    v2 = pipeline(
        name,
        sinks=[
            {"postgres": {"table": name, "columns": columns}},
            {"postgres": {"name": "audit", "table": f"{name}_audit", "columns": columns}},
        ],
    )
    s2 = with_pipelines(settings, v2)
    since = iso(t0 - 60_000)
    first = await backfill(s2, pipeline=name, start=since, end="now", mode="live")
    assert first["counts"]["read"] == 30 and first["counts"]["delivered"] == 30
    assert first["sinks"] == {"postgres": {"skipped": 30}, "audit": {"delivered": 30}}
    again = await backfill(s2, pipeline=name, start=since, end="now", mode="live")
    assert again["counts"]["delivered"] == 0 and again["counts"]["duplicates"] == 30
    for t in (name, f"{name}_audit"):
        total, distinct = (await sql(url, f"select count(*), count(distinct event_id) from {t}"))[0]
        assert (total, distinct) == (30, 30), t
    # the jobs' own marks are gone once they completed
    marks = await sql(
        url, "select count(*) from eventpipe.sink_offsets where sink like %s", (f"{name}@%",)
    )
    assert marks[0][0] == 0
