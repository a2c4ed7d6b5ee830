"""The webhook dedup window on the real Postgres: ids inside the window are seen,
older ones are not and are pruned; the per-request check probes the primary key
even for a source the planner's statistics do not know yet."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg

from eventpipe.connectors.webhook.delivery_ids import CHECK_AND_RECORD_SQL, Dedup, json_list
from tests.fixtures.stack import StackInfo


def _scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if plan.get("Relation Name") == "webhook_dedup" and "Scan" in plan["Node Type"]:
        yield plan
    for child in plan.get("Plans", []):
        yield from _scans(child)


async def test_the_check_probes_the_primary_key_for_a_source_new_to_the_statistics(
    stack: StackInfo,
) -> None:
    known, new = f"known-{uuid.uuid4().hex[:8]}", f"new-{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(stack.database_url, autocommit=True) as conn:
        try:
            await conn.execute(
                "insert into eventpipe.webhook_dedup (source, delivery_id) "
                "select %s, 'id-' || g from generate_series(1, 500) g",
                (known,),
            )
            await conn.execute("analyze eventpipe.webhook_dedup")
            # 20k ids of a source the statistics have never seen
            await conn.execute(
                "insert into eventpipe.webhook_dedup (source, delivery_id) "
                "select %s, 'id-' || g from generate_series(1, 20000) g",
                (new,),
            )
            cur = await conn.execute(
                "explain (format json) " + CHECK_AND_RECORD_SQL,
                (new, json_list(["fresh-1"]), 3600, new, json_list(["id-1", "id-2", "nope"])),
            )
            row = await cur.fetchone()
            assert row is not None
            scans = list(_scans(row[0][0]["Plan"]))
            assert scans, row[0]
            assert {s.get("Index Name") for s in scans} == {"webhook_dedup_pkey"}, scans
        finally:
            await conn.execute(
                "delete from eventpipe.webhook_dedup where source = any(%s)", ([known, new],)
            )


async def test_ids_older_than_the_window_are_not_seen_and_are_pruned(stack: StackInfo) -> None:
    source = f"window-{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(stack.database_url, autocommit=True) as conn:
        await conn.execute(
            "insert into eventpipe.webhook_dedup (source, delivery_id, seen_at) values "
            "(%s, 'old', now() - interval '2 hours'), (%s, 'recent', now())",
            (source, source),
        )
    dedup = Dedup(stack.database_url, source, window_s=3600, cache_size=0)
    await dedup.start()
    try:
        assert [await dedup.seen(k) for k in ("old", "recent", "never")] == [False, True, False]
        assert await dedup.prune() == 1
    finally:
        await dedup.stop()
    async with await psycopg.AsyncConnection.connect(stack.database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "select delivery_id from eventpipe.webhook_dedup where source = %s", (source,)
        )
        assert [r[0] for r in await cur.fetchall()] == ["recent"]
        await conn.execute("delete from eventpipe.webhook_dedup where source = %s", (source,))
