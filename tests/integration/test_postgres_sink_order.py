"""The postgres sink's ordering guard (``order_by``) on the real database: an older
event never overwrites a newer row, whichever write path (COPY + staging, or
executemany) and wherever the older event sits (an earlier batch, later in the
same batch); nulls as the README says."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from eventpipe.connectors.sinks.postgres import PostgresSink, PostgresSinkConfig
from eventpipe.context import Context
from eventpipe.db.pool import open_pool
from eventpipe.envelope import CloudEvent
from eventpipe.settings import Settings
from eventpipe.sink import DeliveryItem
from tests.integration.test_pipeline_support import ident, sql

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def at(key: str, amount: int, minute: int | None, offset: int, topic: str) -> DeliveryItem:
    data: dict[str, Any] = {"k": key, "amount": amount}
    if minute is not None:
        data["version"] = minute
    ev = CloudEvent.create(
        "t", "/order", data, id=f"{key}-{offset}", time=T0 + timedelta(minutes=minute or 0)
    )
    return DeliveryItem(offset, [ev], topic, 0, offset)


@contextlib.asynccontextmanager
async def guarded(
    settings: Settings, method: str, rows: str = ""
) -> AsyncIterator[tuple[PostgresSink, str, str]]:
    """(a started upsert sink with ``order_by: version``, its table, a topic); the
    table holds ``rows`` (SQL values) to begin with."""
    url = settings.database.url.get_secret_value()
    table, topic = ident("ordered"), ident("topic")
    await sql(url, f"create table {table} (k text primary key, amount int, version int)")
    if rows:
        await sql(url, f"insert into {table} values {rows}")
    cfg = PostgresSinkConfig.model_validate(
        {
            "table": table,
            "mode": "upsert",
            "key": ["k"],
            "columns": {"k": ".data.k", "amount": ".data.amount", "version": ".data.version"},
            "order_by": "version",
            "method": method,
        }
    )
    pool = await open_pool(settings.database)
    sink = PostgresSink(cfg, name="pg")
    sink.bind(ident("order"), Context(settings, None, None, pool))  # type: ignore[arg-type]
    try:
        await sink.start()
        yield sink, table, topic
    finally:
        await sink.close()
        await pool.close()


@pytest.mark.parametrize("method", ["copy", "executemany"])
async def test_an_older_event_never_overwrites_a_newer_row(settings: Settings, method: str) -> None:
    async with guarded(settings, method) as (sink, table, topic):
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
    url = settings.database.url.get_secret_value()
    rows = await sql(url, f"select k, amount, version from {table} order by k")
    assert rows == [("a", 50, 5), ("b", 3, 3), ("c", 7, 7)]


@pytest.mark.parametrize("method", ["copy", "executemany"])
async def test_nulls_in_the_ordering_column(settings: Settings, method: str) -> None:
    async with guarded(settings, method, "('old', 1, null), ('new', 1, 4)") as (
        sink,
        table,
        topic,
    ):
        # a row without a version is overwritten by any event; an event without a
        # version never overwrites a row that has one
        assert await sink.deliver([at("old", 2, None, 0, topic)]) == {}
        assert await sink.deliver([at("new", 2, None, 1, topic)]) == {}
        assert await sink.deliver([at("old", 3, 1, 2, topic)]) == {}
    url = settings.database.url.get_secret_value()
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
