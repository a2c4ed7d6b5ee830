"""``mode: cdc``: a row inserted after the slot exists but before the start-up drain
selects is taken by the drain AND streamed as an insert; it must go out once."""

from __future__ import annotations

from typing import Any

import pytest

from eventpipe.connectors.outbox import api as outbox
from eventpipe.connectors.outbox import relay as relay_mod
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import from_kafka
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.test_cdc_support import pg, unique
from tests.integration.test_outbox_relay import make_outbox, relay, wait_empty


def ce_id(r: Any) -> str:
    return from_kafka(r.key, r.value, list(r.headers)).id


async def test_row_inserted_before_the_start_up_drain_goes_out_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = await make_outbox(settings)
    prefix = unique("ob")
    ids: list[str] = []
    real = relay_mod.drain_once

    async def drain_after_an_insert(*args: Any, **kwargs: Any) -> tuple[int, int]:
        if not ids:  # the slot exists now: this insert is also in the stream
            ev = CloudEvent.create("t.race", "/t", {"n": 1})
            ids.append(ev.id)
            async with await pg(settings) as conn, conn.transaction():
                await outbox.publish(conn, ev, aggregate_type="item", aggregate_id="k", table=table)
        return await real(*args, **kwargs)

    monkeypatch.setattr(relay_mod, "drain_once", drain_after_an_insert)
    async with relay(settings, mode="cdc", table=table, topic=prefix + ".{aggregatetype}"):
        await wait_empty(settings, table)
        after = CloudEvent.create("t.after", "/t", {"n": 2})  # the stream passed the drain
        async with await pg(settings) as conn, conn.transaction():
            await outbox.publish(conn, after, aggregate_type="item", aggregate_id="k", table=table)
        await wait_empty(settings, table)
        got = await read_records(
            settings.kafka.bootstrap,
            f"{prefix}.item",
            2,
            until=lambda rs: after.id in [ce_id(r) for r in rs],
        )
    seen = [ce_id(r) for r in got]
    assert sorted(seen) == sorted([ids[0], after.id]), seen
