"""``eventpipe_outbox_published_total`` counts the events on their topics: not the
rows the broker refused, nor those no event could be made of (dead letters both)."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client import REGISTRY

from eventpipe.connectors.outbox import api as outbox
from eventpipe.envelope import CloudEvent
from eventpipe.settings import Settings
from tests.conformance.base import SMALL_RECORDS
from tests.helpers import read_records
from tests.integration.test_cdc_support import execute, pg, unique
from tests.integration.test_outbox_relay import make_outbox, relay, wait_empty


def published(relay_name: str) -> float:
    value = REGISTRY.get_sample_value("eventpipe_outbox_published_total", {"relay": relay_name})
    return value or 0.0


@pytest.mark.parametrize("mode", ["cdc", "poll"])
async def test_published_counts_only_events_on_their_topics(settings: Settings, mode: str) -> None:
    table = await make_outbox(settings)
    prefix = unique("ob")
    kafka = settings.kafka.model_copy(update={"max_request_size": SMALL_RECORDS})
    small = settings.model_copy(update={"kafka": kafka})
    async with relay(
        small, mode=mode, table=table, topic=prefix + ".{aggregatetype}", dlq_topic=f"{prefix}.dlq"
    ) as r:
        async with await pg(settings) as conn, conn.transaction():
            for ev in [
                CloudEvent.create("t.good", "/t", {"n": 1}),
                CloudEvent.create("t.huge", "/t", {"pad": "x" * 2 * SMALL_RECORDS}),  # refused
                CloudEvent.create("t.good", "/t", {"n": 2}),
            ]:
                await outbox.publish(conn, ev, aggregate_type="item", aggregate_id="k", table=table)
        # a row no CloudEvent can be made of (its ce_time is not a timestamp)
        await execute(
            settings,
            (
                f"insert into {table} (id, aggregatetype, aggregateid, type, payload, headers)"
                " values (%s, 'item', 'k', 't.bad', '{}', %s)",
                (unique("bad"), orjson.dumps({"ce_time": "yesterday"}).decode()),
            ),
        )
        await wait_empty(settings, table)
        good = await read_records(settings.kafka.bootstrap, f"{prefix}.item", 2)
        dead = await read_records(settings.kafka.bootstrap, f"{prefix}.dlq", 2)
        name = r.name
    assert len(good) == 2 and len(dead) == 2
    assert published(name) == 2
