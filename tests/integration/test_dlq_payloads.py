"""A record too large for the broker is dead-lettered with its content kept (the value
in eventpipe.dlq_payloads, named by the eventpipe.dlq.payload.ref header), shown by
`eventpipe dlq show` and delivered by `eventpipe dlq replay` once the limit allows."""

from __future__ import annotations

import secrets

import orjson
import pytest

from eventpipe.db.pool import open_pool
from eventpipe.dlq.ops import Dlq
from eventpipe.dlq.query import Filters
from eventpipe.dlq.record import H_PAYLOAD_REF, DeadLetter, Origin
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.envelope.kafka import from_kafka
from eventpipe.publisher import PublishBatchError, Publisher
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.test_cdc_cli import ep
from tests.integration.test_cdc_support import caught_up, cdc_source, execute, unique

SMALL = 64 * 1024


def small_limit(settings: Settings) -> Settings:
    kafka = settings.kafka.model_copy(update={"max_request_size": SMALL})
    return settings.model_copy(update={"kafka": kafka})


async def test_an_oversize_cdc_row_is_kept_and_replayed_once_the_limit_allows(
    settings: Settings,
) -> None:
    small = small_limit(settings)
    t = unique("oversize")
    big = secrets.token_hex(150_000)  # 300 KB, well over the 64 KiB limit
    await execute(settings, f"create table {t} (id int primary key, blob text)")
    async with cdc_source(small, tables=[t], snapshot="never") as src:
        topic, dlq = f"{src.name}.public.{t}", f"{src.name}.dlq"
        await execute(
            settings,
            f"insert into {t} values (1, 'small')",
            (f"insert into {t} values (2, %s)", (big,)),
            f"insert into {t} values (3, 'after')",
        )
        await caught_up(settings, src)
        [rec] = await read_records(settings.kafka.bootstrap, dlq, 1)
    letter = DeadLetter.from_kafka(rec.key, rec.value, list(rec.headers))
    assert letter.exception_class.endswith("RecordTooLargeError")
    assert letter.key == b"2" and letter.origin.topic == topic
    ref = dict(rec.headers).get(H_PAYLOAD_REF)
    assert ref, "the dead letter names where its value is kept"
    event_id = dict(letter.headers)["ce_id"].decode()

    # `dlq show` fetches the value back
    code, out, err = await ep(small, "dlq", "show", event_id, "--topic", dlq, "--json")
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["event"]["id"] == event_id and doc["event"]["data"]["after"]["blob"] == big
    assert doc["payload"]["ref"] == ref.decode()

    # replay while the limit still refuses it: a failure, nothing recorded
    code, _out, err = await ep(small, "dlq", "replay", "--topic", dlq)
    assert code == 1 and "replayed 0" in err and "failed 1" in err, err
    # the limit raised: delivered to the original topic, as the source built it
    code, _out, err = await ep(settings, "dlq", "replay", "--topic", dlq)
    assert code == 0 and "replayed 1" in err, err
    records = await read_records(settings.kafka.bootstrap, topic, 3)
    [replayed] = [r for r in records if r.key == b"2"]
    ev = from_kafka(replayed.key, replayed.value, list(replayed.headers))
    assert ev.id == event_id and ev.type.endswith(".created")
    assert ev.data["after"] == {"id": 2, "blob": big}
    # and only once
    code, _out, err = await ep(settings, "dlq", "replay", "--topic", dlq)
    assert code == 0 and "replayed 0" in err and "skipped 1" in err, err


async def test_every_writer_keeps_an_oversize_value(settings: Settings, topic: str) -> None:
    """Pipelines, webhooks and sources share DeadLetterWriter: with the database it keeps
    an oversize value; without one it refuses (never an empty dead letter)."""
    small = small_limit(settings)
    value = secrets.token_bytes(SMALL * 2)
    letter = DeadLetter.from_exception(
        ValueError("sink refused"),
        key=b"k",
        value=value,
        headers=[("ce_id", b"ev-big")],
        pipeline="p",
        stage="sink",
        origin=Origin("src", 0, 7, 1),
    )
    pool = await open_pool(settings.database)
    try:
        async with Publisher(small) as pub:
            with pytest.raises(PublishBatchError):
                await DeadLetterWriter(pub, topic).write([letter])
            [ack] = await DeadLetterWriter(pub, topic, pool=pool).write([letter])
        assert ack.topic == topic
        [entry] = await Dlq(small, pool).select([topic], Filters())
    finally:
        await pool.close()
    assert entry.letter.value == value and entry.letter.key == b"k"
    assert entry.letter.headers == [("ce_id", b"ev-big")]
    doc = entry.to_doc(full=True)
    assert doc["payload"] == {"ref": entry.letter.payload_ref, "size": len(value)}


async def test_a_webhook_refusal_larger_than_the_broker_takes_is_kept(
    settings: Settings, topic: str
) -> None:
    """A 422 webhook body over kafka.max_request_size (but within max_body_bytes) is
    dead-lettered with its body kept, not lost with a `dead_letter: null` answer."""
    from tests.integration.test_webhook_source import (
        SCHEMA,
        close_hook,
        open_hook,
        standard_headers,
    )

    hook = await open_hook(small_limit(settings), topic, validate={"schema": SCHEMA})
    try:
        body = orjson.dumps(
            {"type": "invoice.paid", "data": {"amount": -5}, "pad": secrets.token_hex(SMALL)}
        )
        status, problem = await hook.post(body, standard_headers(body, f"big-{unique()}"))
        assert status == 422, problem
        assert problem["dead_letter"] == f"{topic}.dlq"
        assert hook.ctx.pool is not None
        [entry] = await Dlq(hook.settings, hook.ctx.pool).select([f"{topic}.dlq"], Filters())
    finally:
        await close_hook(hook)
    assert entry.letter.value == body and entry.letter.payload_ref
    assert entry.letter.step == "schema"
