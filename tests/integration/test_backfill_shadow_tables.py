"""Shadow mode for pipelines that write tables: what the postgres (and outbox) sinks
would write, against the table's current rows (added / changed / unchanged, and
rows an ordering column keeps), with examples; nothing of the table changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from eventpipe.envelope import CloudEvent
from eventpipe.settings import Settings
from tests.integration.test_backfill_support import backfill, iso, make_topic, now_ms, produce_at
from tests.integration.test_pipeline_support import ident, sql, with_pipelines


def balance(i: int, ts: int, prefix: str = "b") -> CloudEvent:
    return CloudEvent.create(
        "shop.balance",
        "/shop",
        {"k": f"k{i}", "amount": i * 10},
        id=f"{prefix}{i}",
        time=datetime.fromtimestamp(ts / 1000, UTC),
        partitionkey=f"k{i}",
    )


async def test_shadow_compares_upsert_rows_with_the_table(settings: Settings) -> None:
    name = ident("shadowpg")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (k text primary key, amount int, at timestamptz)")
    await make_topic(settings, name)
    t0 = (now_ms() - 3_600_000) // 1000 * 1000
    await produce_at(
        settings, name, [(i % 3, t0 + i * 1000, balance(i, t0 + i * 1000)) for i in range(5)]
    )
    at = [datetime.fromtimestamp((t0 + i * 1000) / 1000, UTC) for i in range(5)]
    later = datetime.fromtimestamp((t0 + 600_000) / 1000, UTC)
    # the table as the live pipeline left it: k0, k1 as the range's events would
    # write them; k2 newer than its event; k3 different; k4 not there; k9 outside
    await sql(
        url,
        f"insert into {name} values ('k0', 0, %s), ('k1', 10, %s), ('k2', 21, %s), "
        "('k3', 999, %s), ('k9', 90, %s)",
        [at[0], at[1], later, at[3], later],
    )
    before = await sql(url, f"select * from {name} order by k")
    spec: dict[str, Any] = {
        "name": name,
        "source": {"topics": [name], "partitions": 3},
        "steps": [{"jq": "{k, amount}"}],
        "sinks": [
            {
                "postgres": {
                    "name": "balances",
                    "table": name,
                    "mode": "upsert",
                    "key": ["k"],
                    "columns": {"k": ".data.k", "amount": ".data.amount", "at": ".time"},
                    "order_by": "at",
                }
            }
        ],
    }
    report = await backfill(
        with_pipelines(settings, spec),
        pipeline=name,
        start=iso(t0 - 1000),
        end=iso(t0 + 60_000),
        mode="shadow",
        workers=2,  # the scratch table is shared by the worker processes
    )
    assert report["status"] == "completed" and report["workers"] == 2
    comp = report["comparison"]
    (table,) = comp["tables"]
    assert (table["sink"], table["table"], table["mode"]) == ("balances", name, "upsert")
    assert (table["rows"], table["added"], table["changed"]) == (5, 1, 1)
    assert (table["unchanged"], table["older"]) == (2, 1)
    ex = table["examples"]
    assert [e["key"] for e in ex["added"]] == [{"k": "k4"}]
    assert ex["added"][0]["row"]["amount"] == 40
    assert ex["changed"] == [
        {"key": {"k": "k3"}, "differences": [{"column": "amount", "current": 999, "shadow": 30}]}
    ]
    assert [e["key"] for e in ex["older"]] == [{"k": "k2"}]
    assert "no topic sink" not in (comp.get("note") or "")
    # the table is as it was, and the scratch rows are gone
    assert await sql(url, f"select * from {name} order by k") == before
    left = await sql(
        url,
        "select count(*) from pg_tables where schemaname = 'eventpipe' and tablename like %s",
        [f"shadow_{report['job'].replace('-', '_')}%"],
    )
    assert left == [(0,)]


async def test_shadow_compares_insert_and_outbox_rows(settings: Settings) -> None:
    name = ident("shadowob")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (event_id text, amount int)")
    await make_topic(settings, name)
    t0 = now_ms() - 120_000
    b = f"{name}-b"  # the outbox table is shared: ids of this test's own
    await produce_at(settings, name, [(i % 3, t0 + i, balance(i, t0 + i, b)) for i in range(4)])
    window = {"pipeline": name, "start": iso(t0 - 1000), "end": iso(t0 + 1000)}

    def spec(steps: list[Any]) -> dict[str, Any]:
        return {
            "name": name,
            "source": {"topics": [name], "partitions": 3},
            "steps": steps,
            "sinks": [
                {
                    "outbox": {
                        "aggregate_type": '"balance"',
                        "aggregate_id": ".data.k",
                        "rows": {
                            "table": name,
                            "columns": {"event_id": ".id", "amount": ".data.amount"},
                        },
                    }
                }
            ],
        }

    old = spec([{"jq": "{k, amount}"}, {"filter": '.data.k != "k3"'}])
    live = await backfill(with_pipelines(settings, old), mode="live", **window)
    assert live["counts"]["delivered"] == 3
    new = spec([{"jq": '{k, amount: (if .k == "k2" then .amount + 1 else .amount end)}'}])
    report = await backfill(with_pipelines(settings, new), mode="shadow", **window)
    tables = {(t["sink"], t["table"]): t for t in report["comparison"]["tables"]}
    rows = tables[("outbox", name)]
    assert rows["mode"] == "insert"
    assert (rows["rows"], rows["added"], rows["unchanged"]) == (4, 2, 2)  # b2 changed, b3 new
    assert sorted(e["row"]["event_id"] for e in rows["examples"]["added"]) == [f"{b}2", f"{b}3"]
    outbox = tables[("outbox", "eventpipe.outbox")]
    assert (outbox["rows"], outbox["added"], outbox["changed"], outbox["unchanged"]) == (4, 1, 1, 2)
    assert [e["key"] for e in outbox["examples"]["added"]] == [{"id": f"{b}3"}]
    (changed,) = outbox["examples"]["changed"]
    assert changed["key"] == {"id": f"{b}2"}
    assert changed["differences"] == [
        {
            "column": "payload",
            "current": {"k": "k2", "amount": 20},
            "shadow": {"k": "k2", "amount": 21},
        }
    ]
    # nothing written: the table and the outbox hold what the live run wrote
    assert await sql(url, f"select count(*) from {name}") == [(3,)]
    ids = await sql(url, "select id from eventpipe.outbox where id like %s order by id", [f"{b}%"])
    assert ids == [(f"{b}0",), (f"{b}1",), (f"{b}2",)]
