"""The postgres sink's ordering guard (``order_by``) on the real database: an older
event never overwrites a newer row, whichever write path (COPY + staging, or
executemany) and wherever the older event sits (an earlier batch, later in the
same batch); nulls as the README says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventpipe.connectors.sinks.api import DeliveryItem, SinkResources
from eventpipe.connectors.sinks.postgres import PostgresSink, PostgresSinkConfig
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from eventpipe.db.pool import open_pool
from eventpipe.envelope import CloudEvent
from eventpipe.settings import Settings
from tests.integration.test_pipeline_support import ident, sql

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[AsyncConnectionPool]:
    p = await open_pool(settings.database)
    try:
        yield p
    finally:
        await p.close()


def at(key: str, amount: int, minute: int | None, offset: int, topic: str) -> DeliveryItem:
    data: dict[str, Any] = {"k": key, "amount": amount}
    if minute is not None:
        data["version"] = minute
    ev = CloudEvent.create(
        "t", "/order", data, id=f"{key}-{offset}", time=T0 + timedelta(minutes=minute or 0)
    )
    return DeliveryItem(offset, [ev], topic, 0, offset)


async def sink_for(
    settings: Settings, pool: AsyncConnectionPool, table: str, method: str, **over: Any
) -> PostgresSink:
    cfg = PostgresSinkConfig.model_validate(
        {
            "table": table,
            "mode": "upsert",
            "key": ["k"],
            "columns": {"k": ".data.k", "amount": ".data.amount", "version": ".data.version"},
            "order_by": "version",
            "method": method,
            **over,
        }
    )
    sink = PostgresSink(cfg, name="pg")
    sink.bind(ident("order"), SinkResources(settings, None, None, pool))  # type: ignore[arg-type]
    await sink.start()
    return sink


@pytest.mark.parametrize("method", ["copy", "executemany"])
async def test_an_older_event_never_overwrites_a_newer_row(
    settings: Settings, pool: AsyncConnectionPool, method: str
) -> None:
    url = settings.database.url.get_secret_value()
    table, topic = ident("ordered"), ident("topic")
    await sql(url, f"create table {table} (k text primary key, amount int, version int)")
    sink = await sink_for(settings, pool, table, method)
    try:
        # batch 1: a at 5; b at 1
        assert await sink.deliver([at("a", 5, 5, 0, topic), at("b", 1, 1, 1, topic)]) == {}
        # batch 2: a at 1 (older: kept out); b at 3, then b at 2 later in the same batch
        # (older than the batch's own newer row: kept out too); c new; a at 5 again
        # (the same version: applied, so a corrected transform rewrites the row)
        batch = [
            at("a", 1, 1, 2, topic),
            at("b", 3, 3, 3, topic),
            at("b", 2, 2, 4, topic),
            at("c", 7, 7, 5, topic),
            at("a", 50, 5, 6, topic),
        ]
        assert await sink.deliver(batch) == {}
    finally:
        await sink.close()
    rows = await sql(url, f"select k, amount, version from {table} order by k")
    assert rows == [("a", 50, 5), ("b", 3, 3), ("c", 7, 7)]


@pytest.mark.parametrize("method", ["copy", "executemany"])
async def test_nulls_in_the_ordering_column(
    settings: Settings, pool: AsyncConnectionPool, method: str
) -> None:
    url = settings.database.url.get_secret_value()
    table, topic = ident("ordnull"), ident("topic")
    await sql(url, f"create table {table} (k text primary key, amount int, version int)")
    await sql(url, f"insert into {table} values ('old', 1, null), ('new', 1, 4)")
    sink = await sink_for(settings, pool, table, method)
    try:
        # a row without a version is overwritten by any event; an event without a
        # version never overwrites a row that has one
        assert await sink.deliver([at("old", 2, None, 0, topic)]) == {}
        assert await sink.deliver([at("new", 2, None, 1, topic)]) == {}
        assert await sink.deliver([at("old", 3, 1, 2, topic)]) == {}
    finally:
        await sink.close()
    rows = await sql(url, f"select k, amount, version from {table} order by k")
    assert rows == [("new", 1, 4), ("old", 3, 1)]


def test_order_by_is_checked_at_load() -> None:
    base = {"table": "t", "columns": {"k": ".data.k", "v": ".data.v"}, "key": ["k"]}
    with pytest.raises(ValidationError, match="order_by: 'at' must also be listed under"):
        PostgresSinkConfig.model_validate({**base, "mode": "upsert", "order_by": "at"})
    with pytest.raises(ValidationError, match="order_by only applies to mode upsert"):
        PostgresSinkConfig.model_validate({**base, "mode": "insert", "order_by": "v"})
    with pytest.raises(ValidationError, match="order_by: 'k' is a key column"):
        PostgresSinkConfig.model_validate({**base, "mode": "upsert", "order_by": "k"})
