"""The change-event envelope and its Kafka record (ARCHITECTURE.md section 4)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import kafka as sdk_kafka

from eventpipe.connectors.postgres_cdc import pgoutput as pg
from eventpipe.connectors.postgres_cdc.events import (
    EventBuilder,
    UnencodableRowError,
    fill_unchanged,
    key_string,
)
from eventpipe.connectors.postgres_cdc.types import TypeRegistry
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import from_kafka, to_kafka

WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def builder(**kw: Any) -> EventBuilder:
    args: dict[str, Any] = dict(
        name="shop",
        prefix="shop",
        type_prefix="com.example",
        source_uri="/eventpipe/postgres_cdc/shop",
        database="app",
        topic_template="{prefix}.{schema}.{table}",
        message_topic="{prefix}.message",
        toast_placeholder="__unavailable",
    )
    args.update(kw)
    return EventBuilder(**args)


def table(b: EventBuilder, key: list[str] | None = None):
    rel = pg.Relation(
        16400,
        "public",
        "orders",
        "d",
        [
            pg.Column("id", 23, -1, True),
            pg.Column("region", 25, -1, True),
            pg.Column("total", 1700, -1, False),
        ],
    )
    return b.table_info(rel, TypeRegistry(), key)


def change(b: EventBuilder, t: Any, op: str, before: Any, after: Any, unchanged: Any = None):
    return b.change(
        t,
        op,
        before,
        after,
        unchanged,
        event_id="0/16B3748:3",
        time=WHEN,
        commit_ms=1714979289123,
        commit_lsn="0/16B3748",
        xid=771,
        lsn=0x16B3700,
        now_ms=1714979289200,
    )


def test_created_event_envelope_and_attributes() -> None:
    b = builder()
    t = table(b, ["id"])
    [(topic, msg, eid)] = change(b, t, "c", None, {"id": 7, "region": "eu", "total": "9.50"})
    assert topic == "shop.public.orders" and eid == "0/16B3748:3"
    ev = from_kafka(msg.key, msg.value, msg.headers)
    assert ev.id == "0/16B3748:3"
    assert ev.type == "com.example.public.orders.created"
    assert ev.source == "/eventpipe/postgres_cdc/shop"
    assert ev.time == WHEN and ev.partitionkey == "7" and msg.key == b"7"
    assert ev.extensions["cdclsn"] == "0/16B3748"
    assert ev.data == {
        "before": None,
        "after": {"id": 7, "region": "eu", "total": "9.50"},
        "op": "c",
        "source": {
            "version": ev.data["source"]["version"],
            "connector": "postgresql",
            "name": "shop",
            "ts_ms": 1714979289123,
            "snapshot": "false",
            "db": "app",
            "sequence": None,
            "schema": "public",
            "table": "orders",
            "txId": 771,
            "lsn": 0x16B3700,
            "xmin": None,
        },
        "ts_ms": 1714979289200,
    }


def test_fast_binary_record_is_byte_identical_to_to_kafka() -> None:
    b = builder()
    t = table(b, ["id", "region"])
    [(_, msg, _)] = change(
        b, t, "u", {"id": 1, "region": "eu"}, {"id": 1, "region": "eu", "total": "1"}
    )
    ev = from_kafka(msg.key, msg.value, msg.headers)
    again = to_kafka(
        CloudEvent(
            id=ev.id,
            source=ev.source,
            type=ev.type,
            time=ev.time,
            datacontenttype="application/json",
            data=ev.data,
            extensions={"cdclsn": "0/16B3748", "partitionkey": ev.partitionkey or ""},
        )
    )
    assert (msg.key, msg.value, msg.headers) == (again.key, again.value, again.headers)
    assert msg.key == b'{"id":1,"region":"eu"}'  # a composite key is a JSON object


def test_official_sdk_parses_the_record() -> None:
    b = builder()
    [(_, msg, _)] = change(b, table(b, ["id"]), "d", {"id": 3, "region": None}, None)
    sdk = sdk_kafka.from_kafka_event(
        sdk_kafka.KafkaMessage(headers=dict(msg.headers), key=msg.key, value=msg.value)
    )
    assert sdk.get_id() == "0/16B3748:3" and sdk.get_type().endswith(".deleted")
    assert orjson.loads(msg.value)["op"] == "d"


def test_structured_mode_and_tombstones() -> None:
    b = builder(mode="structured", tombstones_on_delete=True)
    outs = change(b, table(b, ["id"]), "d", {"id": 3}, None)
    assert len(outs) == 2
    ev = from_kafka(outs[0][1].key, outs[0][1].value, outs[0][1].headers)
    assert ev.type.endswith(".deleted") and ev.partitionkey == "3"
    tomb = outs[1][1]
    assert tomb.key == b"3" and tomb.value is None and outs[1][2] == "0/16B3748:3:tombstone"


def test_unchanged_toast_columns_are_named() -> None:
    b = builder()
    after = {"id": 1, "region": pg.UNCHANGED, "total": "2"}
    missing = fill_unchanged(after, ["region"], None, "__unavailable")
    assert after["region"] == "__unavailable" and missing == ["region"]
    [(_, msg, _)] = change(b, table(b, ["id"]), "u", {"id": 1}, after, missing)
    data = orjson.loads(msg.value or b"")
    assert data["unchanged_toast_columns"] == ["region"]
    assert data["after"]["region"] == "__unavailable"
    # with a full old row (REPLICA IDENTITY FULL) the unchanged value is the old one
    after2 = {"id": 1, "region": pg.UNCHANGED}
    assert fill_unchanged(after2, ["region"], {"id": 1, "region": "eu"}, "x") is None
    assert after2["region"] == "eu"


def test_truncate_and_message_events() -> None:
    b = builder()
    t = table(b, ["id"])
    topic, msg, _ = b.truncate(
        t,
        event_id="0/5:0",
        time=WHEN,
        commit_ms=1,
        commit_lsn="0/5",
        xid=9,
        lsn=5,
        now_ms=2,
    )
    ev = from_kafka(msg.key, msg.value, msg.headers)
    assert topic == "shop.public.orders" and ev.type.endswith(".truncated") and msg.key is None
    assert ev.data["op"] == "t"
    topic, msg, _ = b.message(
        "app.audit",
        b"\x00hi",
        transactional=True,
        event_id="0/5:1",
        time=WHEN,
        commit_ms=1,
        commit_lsn="0/5",
        xid=9,
        lsn=6,
        now_ms=2,
    )
    ev = from_kafka(msg.key, msg.value, msg.headers)
    assert topic == "shop.message" and ev.type == "com.example.message"
    assert ev.data["message"] == {"prefix": "app.audit", "content": "AGhp", "transactional": True}


def test_a_value_json_cannot_hold_is_an_unencodable_row() -> None:
    b = builder()
    with pytest.raises(UnencodableRowError, match=r"public\.orders"):
        change(b, table(b, ["id"]), "c", None, {"id": 1, "region": "x", "total": 2**70})


def test_key_string() -> None:
    assert key_string([42], ["id"]) == "42"
    assert key_string(["a"], ["id"]) == "a"
    assert key_string([True], ["id"]) == "true"
    assert key_string([1.5], ["id"]) == "1.5"
    assert key_string([1, "x"], ["a", "b"]) == '{"a":1,"b":"x"}'


def test_relation_key_falls_back_to_identity_columns() -> None:
    b = builder()
    t = table(b, None)
    assert t.key == ["id", "region"]  # flagged in the Relation message
    assert t.key_row([b"5", b"eu", None]) == {"id": 5, "region": "eu"}
    assert t.key_of({"id": 5, "region": "eu", "total": "1"}) == (5, "eu")
