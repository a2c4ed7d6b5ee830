"""The outbox sink on the real database and broker: an event id already in the
outbox is not an error (the row there is that event), and a record whose outbox
row PostgreSQL refuses fails alone -- its table rows rolled back with it, the
other records of the batch written."""

from __future__ import annotations

import asyncio

from psycopg_pool import AsyncConnectionPool

from eventpipe.connectors.sinks.outbox import OutboxSink, OutboxSinkConfig
from eventpipe.connectors.sinks.postgres import RowRejectedError
from eventpipe.context import Context
from eventpipe.envelope import CloudEvent
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from eventpipe.sink import DeliveryItem
from tests.helpers import read_records
from tests.integration.test_pipeline_support import (
    ident,
    running,
    sql,
    wait_rows,
    with_pipelines,
)


def order(i: int, name: str, **data: object) -> CloudEvent:
    body = {"order_id": f"o-{i}", "total": i, **data}
    return CloudEvent.create("shop.order.created", "/shop", body, id=f"{name}-evt-{i}")


async def test_an_event_id_already_in_the_outbox_is_not_a_failure(settings: Settings) -> None:
    """The issue's reproduction, scaled down: the dedup window passes, the same event
    comes again with new ones; nothing is dead-lettered and each id is one row."""
    name = ident("obxid")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (id text primary key, total int not null)")
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "state": {"dedup_window": "1s"},
        "sinks": [
            {
                "outbox": {
                    "aggregate_type": f'"{name}"',
                    "aggregate_id": ".data.order_id",
                    "rows": {
                        "table": name,
                        "mode": "upsert",
                        "key": ["id"],
                        "columns": {"id": ".data.order_id", "total": ".data.total"},
                    },
                }
            }
        ],
    }
    s = with_pipelines(settings, pipeline)
    outbox = f"select count(*) from eventpipe.outbox where aggregatetype = '{name}'"
    async with running(s), Publisher(s) as pub:
        await pub.publish_batch(name, [order(0, name)])
        assert await wait_rows(url, outbox, 1) == 1
        await asyncio.sleep(2.5)  # past the dedup window: X is not a duplicate any more
        await pub.publish_batch(name, [order(0, name)] + [order(i, name) for i in range(1, 6)])
        assert await wait_rows(url, outbox, 6) == 6, "the batch with the known id was not written"
        assert await wait_rows(url, f"select count(*) from {name}", 6) == 6
    letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 1, timeout=3)
    assert letters == []
    rows = await sql(
        url,
        "select id, count(*) from eventpipe.outbox where aggregatetype = %s group by id",
        [name],
    )
    assert sorted(rows) == sorted((f"{name}-evt-{i}", 1) for i in range(6))


async def test_a_refused_outbox_row_fails_only_its_own_record(
    settings: Settings, pool: AsyncConnectionPool
) -> None:
    url = settings.database.url.get_secret_value()
    table, topic = ident("obxrow"), ident("topic")
    await sql(url, f"create table {table} (id text primary key, total int not null)")
    cfg = OutboxSinkConfig.model_validate(
        {
            "aggregate_type": f'"{table}"',
            "aggregate_id": ".data.order_id",
            "rows": {"table": table, "columns": {"id": ".data.order_id", "total": ".data.total"}},
        }
    )
    sink = OutboxSink(cfg, name="outbox")
    sink.bind("obx-test", Context(settings, None, None, pool))  # type: ignore[arg-type]
    await sink.start()
    try:
        # PostgreSQL's jsonb refuses \u0000 in a string: the outbox row (payload jsonb)
        # of record 3 cannot be written, although its table row could.
        events = [order(i, table, note="\x00" if i == 3 else "ok") for i in range(6)]
        items = [DeliveryItem(n, [ev], topic, 0, n) for n, ev in enumerate(events)]
        failed = await sink.deliver(items)
    finally:
        await sink.close()

    assert sorted(failed) == [3]
    assert isinstance(failed[3], RowRejectedError)
    assert [r[0] for r in await sql(url, f"select id from {table} order by id")] == [
        f"o-{i}" for i in range(6) if i != 3
    ]
    ids = await sql(
        url, "select id from eventpipe.outbox where aggregatetype = %s order by id", [table]
    )
    assert [r[0] for r in ids] == [f"{table}-evt-{i}" for i in range(6) if i != 3]
    marks = await sql(url, 'select "offset" from eventpipe.sink_offsets where topic = %s', [topic])
    assert marks == [(5,)]
