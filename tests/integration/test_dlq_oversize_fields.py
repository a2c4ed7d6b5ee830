"""A record whose key or a header alone is larger than ``kafka.max_request_size``:
its dead letter cannot carry them either.  The dead letter still goes out, those
fields cut (the originals kept in eventpipe.dlq_payloads, the ``eventpipe.dlq.cut``
header naming them and their sizes), so the source moves on and nothing is lost."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from eventpipe.connectors.outbox import api as outbox
from eventpipe.dlq.record import H_CUT, DeadLetter
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import from_kafka
from eventpipe.settings import Settings
from tests.conformance.base import SMALL_RECORDS
from tests.helpers import read_records
from tests.integration.test_cdc_support import caught_up, cdc_source, execute, fetch, pg, unique
from tests.integration.test_outbox_relay import make_outbox, relay, wait_empty

BIG = 3 * SMALL_RECORDS  # one field alone over the producer's limit


def small_records(settings: Settings) -> Settings:
    kafka = settings.kafka.model_copy(update={"max_request_size": SMALL_RECORDS})
    return settings.model_copy(update={"kafka": kafka})


async def kept(settings: Settings, ref: str) -> bytes:
    [(value,)] = await fetch(
        settings, "select value from eventpipe.dlq_payloads where ref = %s", (ref,)
    )
    return bytes(value)


def cut_of(headers: list[tuple[str, bytes]]) -> dict[str, Any]:
    [raw] = [v for k, v in headers if k == H_CUT]
    return {c["field"]: c for c in orjson.loads(raw)}


@pytest.mark.parametrize("mode", ["cdc", "poll"])
async def test_outbox_row_with_an_oversized_id_or_aggregate_id(
    settings: Settings, mode: str
) -> None:
    table = await make_outbox(settings)
    prefix = unique("ob")
    big_id, big_agg = "i" * BIG, "a" * BIG
    async with relay(
        small_records(settings),
        mode=mode,
        table=table,
        topic=prefix + ".{aggregatetype}",
        on_publish="delete",
        dlq_topic=f"{prefix}.dlq",
    ):
        async with await pg(settings) as conn, conn.transaction():
            for ev, agg in [
                (CloudEvent.create("t.big_id", "/t", {"n": 1}, id=big_id), "k1"),
                (CloudEvent.create("t.big_agg", "/t", {"n": 2}), big_agg),
                (CloudEvent.create("t.after", "/t", {"n": 3}), "k3"),
            ]:
                await outbox.publish(conn, ev, aggregate_type="item", aggregate_id=agg, table=table)
        await wait_empty(settings, table, within_s=30)  # the relay went on
        [good] = await read_records(settings.kafka.bootstrap, f"{prefix}.item", 1)
        dead = await read_records(settings.kafka.bootstrap, f"{prefix}.dlq", 2)
        letters = [(r, DeadLetter.from_kafka(r.key, r.value, list(r.headers))) for r in dead]
        by_type = {}
        for r, d in letters:
            assert len(r.key or b"") + len(r.value or b"") < SMALL_RECORDS
            cut = cut_of(list(r.headers))
            by_type["id" if "header:ce_id" in cut else "agg"] = (r, d, cut)
        originals = {
            name: {f: await kept(settings, c["ref"]) for f, c in cut.items()}
            for name, (_, _, cut) in by_type.items()
        }
    assert from_kafka(good.key, good.value, list(good.headers)).data == {"n": 3}
    assert set(by_type) == {"id", "agg"}
    _, d_id, cut_id = by_type["id"]
    assert d_id.exception_class.endswith("RecordTooLargeError") and d_id.stage == "source"
    assert cut_id["header:ce_id"]["size"] == BIG
    assert originals["id"]["header:ce_id"] == big_id.encode()  # nothing lost
    ce_id = dict(d_id.headers)["ce_id"]
    assert len(ce_id) < 2048 and big_id.encode().startswith(ce_id)
    r_agg, _, cut_agg = by_type["agg"]
    assert cut_agg["key"]["size"] == BIG and originals["agg"]["key"] == big_agg.encode()
    assert r_agg.key is not None and big_agg.encode().startswith(r_agg.key)


async def test_cdc_row_with_an_oversized_primary_key(settings: Settings) -> None:
    t = unique("bigkey")
    await execute(settings, f"create table {t} (id text primary key, v int)")
    big = "k" * BIG
    async with cdc_source(small_records(settings), tables=[t], snapshot="never") as src:
        await execute(
            settings,
            (f"insert into {t} values (%s, 1)", (big,)),
            f"insert into {t} values ('small', 2)",
        )
        await caught_up(settings, src, within_s=30)  # the reader went on
        [good] = await read_records(settings.kafka.bootstrap, f"{src.name}.public.{t}", 1)
        [dead] = await read_records(settings.kafka.bootstrap, f"{src.name}.dlq", 1)
        cut = cut_of(list(dead.headers))
        original_key = await kept(settings, cut["key"]["ref"])
    assert good.key == b"small"
    letter = DeadLetter.from_kafka(dead.key, dead.value, list(dead.headers))
    assert letter.exception_class.endswith("RecordTooLargeError")
    assert cut["key"]["size"] == BIG and original_key == big.encode()
    assert dead.key is not None and big.encode().startswith(dead.key) and len(dead.key) < 2048
