"""A pipeline into the ``outbox`` sink end to end: each record's table rows and its
outbox row in one transaction with the offset marks, exactly once across a
restart; a record whose outbox row cannot be made (a null aggregate id, a jq
error, data that is not JSON) is dead-lettered whole (no table row of it is
written either)."""

from __future__ import annotations

from eventpipe.envelope import CloudEvent
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.test_pipeline_support import (
    dlq_headers,
    ident,
    running,
    sql,
    wait_rows,
    with_pipelines,
)


def order(i: int, **data: object) -> CloudEvent:
    body = {"order_id": f"o-{i}", "total": i, "account": f"a{i % 3}", **data}
    return CloudEvent.create("shop.order.created", "/shop", body, id=f"evt-{i}")


async def test_rows_and_outbox_rows_exactly_once_and_a_bad_record_whole_in_the_dlq(
    settings: Settings,
) -> None:
    name = ident("obx")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (id text primary key, total int not null)")
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 2},
        "sinks": [
            {
                "outbox": {
                    "aggregate_type": f'"{name}"',
                    "aggregate_id": "(.data.account // .subject) | "
                    'if type == "object" then error("an object") else . end',
                    "rows": {
                        "table": name,
                        "columns": {"id": ".data.order_id", "total": ".data.total"},
                    },
                }
            }
        ],
    }
    s = with_pipelines(settings, pipeline)
    # Their rows could be written; their outbox rows cannot be made.
    bad = [
        order(97, account=None),  # null aggregate id
        order(98, account={"x": 1}),  # the aggregate_id program fails
        CloudEvent.create(  # binary data: the outbox holds JSON
            "shop.order.created",
            "/shop",
            b"\x00\x01",
            id="evt-99",
            subject="a1",
            datacontenttype="application/octet-stream",
        ),
    ]

    async with running(s):
        async with Publisher(s) as pub:
            await pub.publish_batch(name, [order(i) for i in range(20)])
            await pub.publish_batch(name, bad)
        assert await wait_rows(url, f"select count(*) from {name}", 20) == 20
        letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 3, timeout=30)
    # Restarted (same group), then more events: nothing is written twice.
    async with running(s):
        async with Publisher(s) as pub:
            await pub.publish_batch(name, [order(i) for i in range(20, 25)])
        assert await wait_rows(url, f"select count(*) from {name}", 25) == 25

    rows = await sql(url, f"select id from {name} order by id")
    assert sorted(r[0] for r in rows) == sorted(f"o-{i}" for i in range(25))
    outbox = await sql(
        url,
        "select id, aggregateid, type, payload->>'order_id' from eventpipe.outbox "
        "where aggregatetype = %s order by id",
        [name],
    )
    assert len(outbox) == 25
    assert {r[0] for r in outbox} == {f"evt-{i}" for i in range(25)}
    assert all(r[1] == f"a{int(r[0][4:]) % 3}" and r[2] == "shop.order.created" for r in outbox)
    assert all(r[3] == f"o-{r[0][4:]}" for r in outbox)

    assert len(letters) == 3
    why = {}
    for letter in letters:
        h = dlq_headers(letter)
        assert h["eventpipe.dlq.stage"] == "sink"
        assert h["eventpipe.dlq.step"] == "outbox"
        assert h["eventpipe.dlq.exception.class"].endswith("OutboxMappingError")
        why[dict(letter.headers)["ce_id"].decode()] = h["eventpipe.dlq.exception.message"]
    assert sorted(why) == ["evt-97", "evt-98", "evt-99"]
    assert "null" in why["evt-97"]
    assert "an object" in why["evt-98"]
    assert "JSON" in why["evt-99"]
    assert await sql(url, f"select count(*) from {name} where id in ('o-97', 'o-98')") == [(0,)]
