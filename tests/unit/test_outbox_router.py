"""Outbox rows -> records (Debezium's outbox router, as CloudEvents), and the API's row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from psycopg.types.json import Jsonb

from eventpipe.connectors.outbox.api import ce_headers, create_table_sql, row_values
from eventpipe.connectors.outbox.router import OutboxRouter
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import from_kafka
from eventpipe.errors import InvalidEventError

WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def router(**kw: object) -> OutboxRouter:
    args: dict[str, object] = dict(
        name="relay", topic_template="outbox.event.{aggregatetype}", source_uri="/eventpipe/outbox"
    )
    args.update(kw)
    return OutboxRouter(**args)


def test_api_row_keeps_the_whole_event() -> None:
    ev = CloudEvent.create(
        "shop.order.paid", "/shop", {"order": 7}, subject="order-7", time=WHEN, tenant="acme"
    )
    values = row_values(ev, "order", "7", {"traceparent": "00-abc-def-01"})
    assert values[:4] == (ev.id, "order", "7", "shop.order.paid")
    assert isinstance(values[4], Jsonb) and values[4].obj == {"order": 7}
    headers = values[5].obj
    assert headers == {
        "traceparent": "00-abc-def-01",
        "ce_source": "/shop",
        "ce_subject": "order-7",
        "ce_time": "2024-01-02T03:04:05Z",
        "ce_datacontenttype": "application/json",
        "ce_tenant": "acme",
    }
    # what the relay makes of that row is the same event, keyed by the aggregate id
    row = {
        "id": ev.id,
        "aggregatetype": "order",
        "aggregateid": "7",
        "type": ev.type,
        "payload": {"order": 7},
        "headers": headers,
        "created_at": datetime(2030, 1, 1, tzinfo=UTC),
    }
    topic, msg, eid = router().route(row)
    assert topic == "outbox.event.order" and eid == ev.id and msg.key == b"7"
    got = from_kafka(msg.key, msg.value, msg.headers)
    assert got == ev.replace(extensions={"partitionkey": "7"})  # the same event, keyed
    assert got.extensions["tenant"] == "acme" and got.partitionkey == "7"
    assert ("traceparent", b"00-abc-def-01") in msg.headers


def test_row_from_cdc_has_text_times_and_no_ce_headers() -> None:
    row = {
        "id": "e1",
        "aggregatetype": "customer",
        "aggregateid": "c9",
        "type": "crm.customer.created",
        "payload": {"name": "Ada"},
        "headers": {},
        "created_at": "2024-01-02T03:04:05.5Z",
    }
    topic, msg, _ = router(topic_template="{name}.{aggregatetype}").route(row)
    ev = from_kafka(msg.key, msg.value, msg.headers)
    assert topic == "relay.customer"
    assert ev.source == "/eventpipe/outbox" and ev.time == datetime(
        2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC
    )


def test_tombstone_on_empty_payload() -> None:
    row = {"id": "e2", "aggregatetype": "order", "aggregateid": "7", "type": "t", "payload": None}
    _, msg, _ = router(tombstone_on_empty_payload=True).route(row)
    assert (msg.key, msg.value, msg.headers) == (b"7", None, [])
    _, msg, _ = router().route(row)  # without the option: an event without data
    assert from_kafka(msg.key, msg.value, msg.headers).data is None


def test_bad_rows_and_events_are_refused() -> None:
    with pytest.raises(InvalidEventError, match="not a valid topic"):
        router().route({"id": "x", "aggregatetype": "a b", "aggregateid": "1", "type": "t"})
    ev = CloudEvent.create("t", "/s", b"\x00raw", datacontenttype="application/octet-stream")
    with pytest.raises(InvalidEventError, match="JSON"):
        row_values(ev, "a", "1")
    with pytest.raises(InvalidEventError, match="required"):
        row_values(CloudEvent.create("t", "/s", {}), "", "1")
    with pytest.raises(InvalidEventError, match="ce_"):
        row_values(CloudEvent.create("t", "/s", {}), "a", "1", {"ce_source": "x"})
    assert "ce_partitionkey" not in ce_headers(CloudEvent.create("t", "/s", partitionkey="k"))


def test_create_table_sql_names_the_table() -> None:
    text = create_table_sql("app.outbox").as_string(None)
    assert '"app"."outbox"' in text and "published_at" in text and '"outbox_unpublished"' in text
