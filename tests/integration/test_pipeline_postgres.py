"""A pipeline into Postgres (and a topic) end to end, with every kind of bad record
landing in the dead-letter topic while good records keep flowing."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.pipelines.component import PipelineComponent
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from tests.helpers import read_events, read_records
from tests.integration.test_pipeline_support import (
    dlq_headers,
    ident,
    running,
    sql,
    status_when,
    wait_rows,
    with_pipelines,
)


def order(i: int, **data: object) -> CloudEvent:
    body = {"order_id": f"o-{i}", "total": i, "customer": f"c{i % 5}", **data}
    return CloudEvent.create(
        "shop.order.created", "/shop", body, id=f"evt-{i}", partitionkey=f"c{i % 5}"
    )


async def test_postgres_and_topic_sinks_with_dead_letters(settings: Settings) -> None:
    name = ident("orders")
    table = name
    url = settings.database.url.get_secret_value()
    await sql(
        url,
        f"create table {table} (id text primary key, total numeric not null "
        "check (total < 1000), customer text, event_id text not null)",
    )
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 3},
        "validate_input": {"schema": {"type": "object", "required": ["order_id", "total"]}},
        "steps": [
            {"jq": "{id: .order_id, total: (.total | tonumber), customer}"},
            {"filter": ".data.total >= 0"},
        ],
        "sinks": [
            {
                "postgres": {
                    "table": table,
                    "columns": {
                        "id": ".data.id",
                        "total": ".data.total",
                        "customer": ".data.customer",
                        "event_id": ".id",
                    },
                }
            },
            {"topic": {"topic": f"{name}.out"}},
        ],
        "retry": {"max_attempts": 2, "initial": "10ms", "max": "50ms"},
    }
    s = with_pipelines(settings, pipeline)
    good = [order(i) for i in range(60)]
    bad_json = KafkaMessage(
        b"k",
        b"{not json",
        [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"bad-json"),
            ("ce_source", b"/shop"),
            ("ce_type", b"shop.order.created"),
            ("content-type", b"application/json"),
        ],
    )
    schema_invalid = order(1001)
    schema_invalid.data = {"order_id": "o-x"}  # no total
    jq_error = order(1002, total="not a number")
    constraint = order(1003, total=5000)  # violates check (total < 1000)
    filtered = order(1004, total=-1)
    bad = [to_kafka(e) for e in (schema_invalid, jq_error, constraint, filtered)]

    async with running(s) as svc:
        async with Publisher(s) as pub:
            await pub.publish_batch(name, good[:30])
            await pub.publish_messages(name, [bad_json, *bad], ["a", "b", "c", "d", "e"])
            await pub.publish_batch(name, good[30:])
        assert await wait_rows(url, f"select count(*) from {table}", 60) == 60
        letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 4, timeout=30)
        out = await read_events(s.kafka.bootstrap, f"{name}.out", 60, timeout=30)
        [comp] = [c for c in svc.components if isinstance(c, PipelineComponent)]
        # what happened, as status() tells it: 65 records in, 60 events out to each
        # sink, one dead letter per stage; the lag report has seen every partition
        st = await status_when(comp, lambda st: st.total_in == 65 and len(st.lag) == 3)

    assert (st.name, st.kind, st.state, st.total_in, st.total_out) == (
        name,
        "pipeline",
        "running",
        65,
        60,
    )
    assert st.rate_in > 0 and st.rate_out > 0
    assert st.dead_letters == {"decode": 1, "validate": 1, "transform": 1, "sink": 1}
    assert st.lag == {f"{name}[{p}]": 0 for p in range(3)}
    assert st.details["dead_letter_topic"] == f"{name}.dlq"
    pg, topic_sink = st.children
    assert (pg.name, pg.type, pg.state, pg.total_out) == (
        f"{name}/postgres",
        "postgres",
        "running",
        60,
    )
    assert pg.dead_letters == {"sink": 1} and pg.details["circuit"] == "closed"
    assert pg.last_error is not None and pg.last_error.error_class.endswith("RowRejectedError")
    assert (topic_sink.type, topic_sink.total_out, topic_sink.last_error) == ("topic", 60, None)
    assert orjson.loads(orjson.dumps(st.to_dict()))["children"][0]["total_out"] == 60
    assert comp.health() == "ok" and comp.check_name == f"pipeline:{name}"
    assert comp.status().state == "stopped"  # the service stopped it

    rows = await sql(url, f"select id, total, event_id from {table} order by id")
    assert sorted(r[0] for r in rows) == sorted(f"o-{i}" for i in range(60))
    assert {r[2] for r in rows} == {f"evt-{i}" for i in range(60)}
    assert sorted(e.id for e in out) == sorted(f"evt-{i}" for i in range(60))
    assert all("routetopic" not in e.extensions for e in out)

    by_stage = {dlq_headers(r)["eventpipe.dlq.stage"]: r for r in letters}
    assert len(letters) == 4, [dlq_headers(r) for r in letters]
    assert set(by_stage) == {"decode", "validate", "transform", "sink"}
    h = dlq_headers(by_stage["decode"])
    assert h["eventpipe.dlq.exception.class"] == "eventpipe.errors.MalformedEventError"
    assert by_stage["decode"].value == b"{not json"
    assert by_stage["decode"].key == b"k"
    assert h["eventpipe.dlq.topic"] == name
    assert h["eventpipe.dlq.pipeline"] == name
    assert h["eventpipe.dlq.retriable"] == "false"
    assert int(h["eventpipe.dlq.offset"]) >= 0 and h["eventpipe.dlq.partition"] in "012"
    assert h["eventpipe.dlq.attempts"] == "1"
    v = dlq_headers(by_stage["validate"])
    assert v["eventpipe.dlq.step"] == "validate_input"
    assert v["eventpipe.dlq.exception.class"].endswith("SchemaValidationError")
    t = dlq_headers(by_stage["transform"])
    assert t["eventpipe.dlq.step"] == "steps[0].jq"
    assert t["eventpipe.dlq.exception.class"].endswith("TransformError")
    k = dlq_headers(by_stage["sink"])
    assert k["eventpipe.dlq.step"] == "postgres"
    assert k["eventpipe.dlq.exception.class"].endswith("RowRejectedError")
    assert "CheckViolation" in k["eventpipe.dlq.exception.message"]
    # the original headers travel with the dead letter: the CloudEvent id survives
    assert dict(by_stage["sink"].headers)["ce_id"] == b"evt-1003"
    marks = await sql(
        url,
        'select partition, "offset" from eventpipe.sink_offsets where sink = %s',
        (f"{name}/postgres",),
    )
    assert marks and all(o >= 0 for _, o in marks)


async def test_upsert_and_delete_modes(settings: Settings) -> None:
    name = ident("kv")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (k text primary key, v int)")
    up = {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "steps": [{"filter": '.type == "set"'}],
        "sinks": [
            {
                "postgres": {
                    "table": name,
                    "mode": "upsert",
                    "key": ["k"],
                    "columns": {"k": ".data.k", "v": ".data.v"},
                }
            }
        ],
    }
    dele = {
        "name": f"{name}-del",
        "source": {"topics": [name], "partitions": 1},
        "steps": [{"filter": '.type == "del"'}],
        "sinks": [
            {
                "postgres": {
                    "table": name,
                    "mode": "delete",
                    "key": ["k"],
                    "columns": {"k": ".data.k"},
                }
            }
        ],
    }
    s = with_pipelines(settings, up, dele)
    events = [CloudEvent.create("set", "/kv", {"k": f"k{i % 4}", "v": i}) for i in range(20)]

    async def rows_become(expected: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        rows: list[Any] = []
        while loop.time() < deadline:
            rows = await sql(url, f"select k, v from {name} order by k")
            if rows == expected:
                break
            await asyncio.sleep(0.2)
        return rows

    async with running(s), Publisher(s) as pub:
        await pub.publish_batch(name, events)
        final = [("k0", 16), ("k1", 17), ("k2", 18), ("k3", 19)]
        assert await rows_become(final) == final
        await pub.publish(name, CloudEvent.create("del", "/kv", {"k": "k0"}))
        assert await rows_become(final[1:]) == final[1:]
