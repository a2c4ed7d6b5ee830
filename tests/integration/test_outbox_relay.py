"""The transactional outbox: the API inside an application transaction, the CDC and
polling relays, and a relay crash."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from eventpipe.connectors.outbox import api as outbox
from eventpipe.connectors.outbox.relay import OutboxRelay
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import from_kafka
from eventpipe.service.context import open_context
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.test_cdc_support import (
    ServiceProcess,
    drop_cdc_objects,
    execute,
    fetch,
    pg,
    unique,
)


async def make_outbox(settings: Settings) -> str:
    table = f"public.{unique('outbox')}"
    async with await pg(settings) as conn:
        await conn.execute(outbox.create_table_sql(table))
    return table


@asynccontextmanager
async def relay(settings: Settings, **config: Any) -> AsyncIterator[OutboxRelay]:
    name = unique("relay")
    config.setdefault("slot", name)
    config.setdefault("publication", name)
    config.setdefault("poll_interval_ms", 20)
    ctx = await open_context(settings, migrate=False)
    r = OutboxRelay(OutboxRelay.Config.model_validate(config), name=name, ctx=ctx)
    try:
        await r.start()
        yield r
    finally:
        await r.stop()
        await ctx.close()
        await drop_cdc_objects(settings, config["slot"], config["publication"])


async def wait_empty(
    settings: Settings, table: str, where: str = "true", within_s: float = 30
) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        [(n,)] = await fetch(settings, f"select count(*) from {table} where {where}")
        if n == 0:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{table} still has {n} rows where {where}")


@pytest.mark.parametrize("mode", ["cdc", "poll"])
async def test_published_with_the_transaction_and_only_then(settings: Settings, mode: str) -> None:
    table = await make_outbox(settings)
    orders = unique("orders")
    prefix = unique("ob")
    await execute(settings, f"create table {orders} (id int primary key, status text)")
    on_publish = "delete" if mode == "cdc" else "mark"
    async with relay(
        settings, mode=mode, table=table, topic=prefix + ".{aggregatetype}", on_publish=on_publish
    ):
        paid = CloudEvent.create(
            "shop.order.paid", "/shop", {"order": 1, "total": "9.50"}, subject="order-1"
        )
        async with await pg(settings) as conn:
            async with conn.transaction():
                await conn.execute(f"insert into {orders} values (1, 'paid')")
                await outbox.publish(
                    conn,
                    paid,
                    aggregate_type="order",
                    aggregate_id="1",
                    headers={"tenant": "acme"},
                    table=table,
                )
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await outbox.publish(
                        conn,
                        CloudEvent.create("shop.order.paid", "/shop", {"order": 2}),
                        aggregate_type="order",
                        aggregate_id="2",
                        table=table,
                    )
                    raise RuntimeError("the application's transaction fails")
        await wait_empty(settings, table, "published_at is null")
        [rec] = await read_records(settings.kafka.bootstrap, f"{prefix}.order", 1)
        rows = await fetch(settings, f"select id, published_at is not null from {table}")
    ev = from_kafka(rec.key, rec.value, list(rec.headers))
    assert ev == paid.replace(extensions={"partitionkey": "1"})
    assert rec.key == b"1" and ("tenant", b"acme") in list(rec.headers)
    if mode == "cdc":
        assert rows == []  # deleted once acknowledged
    else:
        assert rows == [(paid.id, True)]  # marked once acknowledged


async def test_rows_written_before_the_relay_starts_and_tombstones(settings: Settings) -> None:
    table = await make_outbox(settings)
    prefix = unique("ob")
    async with await pg(settings) as conn, conn.transaction():
        await outbox.publish_many(
            conn,
            [
                (CloudEvent.create("cart.item.added", "/cart", {"sku": "A"}), "cart", "c1"),
                (CloudEvent.create("cart.deleted", "/cart", None), "cart", "c1"),
            ],
            table=table,
        )
    async with relay(
        settings, table=table, topic=prefix + ".{aggregatetype}", tombstone_on_empty_payload=True
    ):
        await wait_empty(settings, table)
        recs = await read_records(settings.kafka.bootstrap, f"{prefix}.cart", 2)
    assert [r.key for r in recs] == [b"c1", b"c1"]
    assert from_kafka(recs[0].key, recs[0].value, list(recs[0].headers)).data == {"sku": "A"}
    assert recs[1].value is None and list(recs[1].headers) == []  # a tombstone


async def app_writes(settings: Settings, table: str, n: int, aggregates: int = 6) -> list[str]:
    """``n`` outbox rows in transactions of 1-3 rows, each aggregate's rows numbered
    in order; returns the event ids in commit order."""
    ids: list[str] = []
    seq = [0] * aggregates
    async with await pg(settings) as conn:
        i = 0
        while i < n:
            async with conn.transaction():
                for _ in range(1 + i % 3):
                    agg = i % aggregates
                    ev = CloudEvent.create("acct.posted", "/ledger", {"agg": agg, "n": seq[agg]})
                    await outbox.publish(
                        conn, ev, aggregate_type="account", aggregate_id=f"a{agg}", table=table
                    )
                    seq[agg] += 1
                    ids.append(ev.id)
                    i += 1
            if i % 30 == 0:
                await asyncio.sleep(0.01)
    return ids


@pytest.mark.parametrize("mode", ["cdc", "poll"])
async def test_published_once_in_order_across_a_relay_crash(
    settings: Settings, tmp_path: Path, mode: str
) -> None:
    table = await make_outbox(settings)
    name, prefix = unique("obrelay"), unique("ob")
    entry = {
        "type": "outbox",
        "name": name,
        "mode": mode,
        "table": table,
        "topic": prefix + ".{aggregatetype}",
        "slot": name,
        "publication": name,
        "batch_size": 50,
        "poll_interval_ms": 10,
        "standby_poll_s": 0.2,
    }
    first = ServiceProcess(settings, tmp_path, [entry])
    second: ServiceProcess | None = None
    try:
        await first.wait_for("reading slot" if mode == "cdc" else "eventpipe serving", 60)
        writes = asyncio.create_task(app_writes(settings, table, 1500))
        await asyncio.sleep(0.5)
        first.kill9()
        second = ServiceProcess(settings, tmp_path, [entry])
        ids = await writes
        await wait_empty(settings, table, within_s=60)
        assert second.stop() == 0
        records = await read_records(settings.kafka.bootstrap, f"{prefix}.account", len(ids), 60)
    finally:
        first.kill9()
        if second is not None:
            second.kill9()
        await drop_cdc_objects(settings, name, name)
    seen: dict[str, bytes | None] = {}
    per_aggregate: dict[bytes, list[int]] = {}
    for r in records:
        ev = from_kafka(r.key, r.value, list(r.headers))
        if ev.id in seen:
            assert seen[ev.id] == r.value  # a re-send is the same event
            continue
        seen[ev.id] = r.value
        assert r.key is not None
        per_aggregate.setdefault(r.key, []).append(ev.data["n"])
    assert set(seen) == set(ids)  # every row, once after dedup by id
    for key, ns in per_aggregate.items():
        assert ns == list(range(len(ns))), f"{key!r} out of order: {ns[:20]}"
