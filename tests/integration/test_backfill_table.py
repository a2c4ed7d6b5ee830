"""Backfill from a CDC source's table: keyset chunks filtered on a timestamp column,
as ``op: r`` change events through the pipeline, idempotent when re-run."""

from __future__ import annotations

import pytest

from eventpipe.backfill.options import BackfillArgumentError
from eventpipe.settings import Settings
from tests.integration.test_backfill_support import backfill
from tests.integration.test_pipeline_support import ident, sql, with_pipelines


async def test_table_rows_in_range_become_read_events_once(settings: Settings) -> None:
    table = ident("orders")
    out = f"{table}_out"
    source = ident("shop")
    url = settings.database.url.get_secret_value()
    await sql(
        url,
        f"create table {table} (id int primary key, total int, updated_at timestamptz not null)",
    )
    await sql(
        url,
        f"insert into {table} select i, i * 10, now() - make_interval(hours => i) "
        "from generate_series(0, 19) i",
    )
    await sql(
        url, f"create table {out} (event_id text not null, id int, total int, op text, type text)"
    )
    topic = f"{source}.public.{table}"
    pipeline = {
        "name": table,
        "source": {"topics": [topic]},
        "steps": [{"jq": "{id: .after.id, total: .after.total, op}"}],
        "sinks": [
            {
                "postgres": {
                    "table": out,
                    "columns": {
                        "event_id": ".id",
                        "id": ".data.id",
                        "total": ".data.total",
                        "op": ".data.op",
                        "type": ".type",
                    },
                }
            }
        ],
        "batch": {"max_records": 2},  # several keyset chunks
    }
    s = with_pipelines(settings, pipeline).model_copy(
        update={
            "sources": [{"type": "postgres_cdc", "name": source, "tables": [f"public.{table}"]}]
        }
    )
    kw = {"pipeline": table, "start": "630m", "end": "270m", "mode": "live", "source": "table"}
    report = await backfill(s, **kw)
    assert report["counts"]["read"] == 6 and report["counts"]["delivered"] == 6
    assert report["partitions"][0]["stream"] == f"table:public.{table}"
    rows = await sql(url, f"select id, total, op, type, event_id from {out} order by id")
    assert [r[:3] for r in rows] == [(i, i * 10, "r") for i in range(5, 11)]
    assert all(r[3] == f"{source}.public.{table}.read" for r in rows)
    assert rows[0][4].startswith(f"backfill:public.{table}:5@")

    again = await backfill(s, **kw)
    assert again["counts"]["delivered"] == 0 and again["counts"]["duplicates"] == 6
    assert (await sql(url, f"select count(*), count(distinct event_id) from {out}")) == [(6, 6)]

    with pytest.raises(
        BackfillArgumentError, match=r"--time-column: table public\.\S+ has no column"
    ):
        await backfill(s, **{**kw, "time_column": "changed_at"})
