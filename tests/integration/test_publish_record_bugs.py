"""A source dead-letters a record the broker refuses only when a class says the
record is bad for good (eventpipe.errors.is_bad_record: too large, say).  When the
broker's answer for one record of a batch is an error no class explains (a bug),
the CDC reader and the kafka source stop (state failed, the service exits 3)
instead: the record is not dead-lettered, the slot does not pass it, its offset
is not committed, and restarted without the bug the source publishes it.  A dead
letter the broker refuses for good is never dropped: the kafka source stops
without committing its record, with a log line naming the record and the fix."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import pytest
from aiokafka import errors as ke

from eventpipe.connectors.kafka_source import KafkaTopicSource
from eventpipe.connectors.postgres_cdc.lsn import parse_lsn
from eventpipe.context import Context
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import KafkaMessage, from_kafka
from eventpipe.kafka.client import RecordTooLargeError
from eventpipe.publisher import Ack, PublishBatchError, Publisher
from eventpipe.settings import Settings
from tests.helpers import read_events, read_records
from tests.integration.test_cdc_support import (
    cdc_source,
    execute,
    flush_lsn,
    slot_row,
    unique,
)
from tests.integration.test_kafka_source import ctx, produce, source, target  # noqa: F401
from tests.integration.test_relay_row_bugs import Bug, wait_failed, watch

Pick = Callable[[str, KafkaMessage, str, str], bool]  # topic, record, event id, via


def refusing(pick: Pick, exc: BaseException, seen: list[str]) -> Callable[..., Awaitable[Any]]:
    """Publisher.publish_messages where the broker answers ``exc`` for each record
    ``pick`` chooses (its id goes to ``seen``); the others are published for real."""
    real = Publisher.publish_messages

    async def publish_messages(
        self: Publisher,
        topic: str,
        messages: Sequence[KafkaMessage],
        ids: Sequence[str],
        *,
        via: str = "publisher",
    ) -> list[Ack]:
        msgs = list(messages)
        bad = [i for i, m in enumerate(msgs) if pick(topic, m, ids[i], via)]
        if not bad:
            return await real(self, topic, msgs, ids, via=via)
        seen.extend(ids[i] for i in bad)
        keep = [i for i in range(len(msgs)) if i not in bad]
        acks = await real(self, topic, [msgs[i] for i in keep], [ids[i] for i in keep], via=via)
        raise PublishBatchError(dict(zip(keep, acks, strict=True)), dict.fromkeys(bad, exc))

    return publish_messages


# --------------------------------------------------------------------- cdc
async def _cdc_table(settings: Settings) -> str:
    t = unique("cdcpub")
    await execute(settings, f"create table public.{t} (id int primary key, v text)")
    return t


async def _cdc_rows(settings: Settings, t: str) -> None:
    await execute(
        settings, f"insert into public.{t} select g, 'v' || g from generate_series(1, 3) g"
    )


def _row_2(data_topic: str) -> Pick:
    return lambda topic, m, _id, _via: topic == data_topic and m.key == b"2"


async def test_an_unclassified_refusal_of_a_cdc_record_stops_the_reader_and_the_slot_stays(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = await _cdc_table(settings)
    real = Publisher.publish_messages
    async with cdc_source(settings, tables=[f"public.{t}"], snapshot="never") as src:
        failures = watch(src)
        topic, dlq = f"{src.name}.public.{t}", f"{src.name}.dlq"
        seen: list[str] = []
        monkeypatch.setattr(
            Publisher, "publish_messages", refusing(_row_2(topic), Bug("a bug"), seen)
        )
        await _cdc_rows(settings, t)
        written = await flush_lsn(settings)
        await wait_failed(failures)
        st = src.status()
        assert seen, "row 2 was never published"
        assert [type(f) for f in failures] == [Bug], failures
        assert st.state == "failed" and not st.dead_letters, st
        row = await slot_row(settings, src.slot)
        assert row is not None and parse_lsn(row[0]) < written, (row, written)
        assert await read_records(settings.kafka.bootstrap, dlq, 0, 1.0) == []

        monkeypatch.setattr(Publisher, "publish_messages", real)  # the bug fixed
        await src.stop()
        failures.clear()
        await src.start()
        recs = await read_records(  # rows 1 and 3 may be there twice (at least once)
            settings.kafka.bootstrap, topic, 3, until=lambda rs: b"2" in {r.key for r in rs}
        )
        assert await read_records(settings.kafka.bootstrap, dlq, 0, 1.0) == []
    assert failures == []
    assert sorted({r.key for r in recs}) == [b"1", b"2", b"3"], recs
    assert [r.key for r in recs].count(b"2") == 1


async def test_a_cdc_record_the_broker_refuses_for_good_is_dead_lettered_alone(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = await _cdc_table(settings)
    async with cdc_source(settings, tables=[f"public.{t}"], snapshot="never") as src:
        failures = watch(src)
        topic, dlq = f"{src.name}.public.{t}", f"{src.name}.dlq"
        refusal = RecordTooLargeError("produce: the record exceeds kafka.max_request_size")
        seen: list[str] = []
        monkeypatch.setattr(Publisher, "publish_messages", refusing(_row_2(topic), refusal, seen))
        await _cdc_rows(settings, t)
        recs = await read_records(settings.kafka.bootstrap, topic, 2)
        [letter] = await read_records(settings.kafka.bootstrap, dlq, 1)
        st = src.status()
    assert failures == [] and st.state != "failed", st
    assert sorted(r.key for r in recs) == [b"1", b"3"]
    headers = dict(letter.headers)
    assert headers["eventpipe.dlq.exception.class"].endswith(b"RecordTooLargeError"), headers
    assert letter.key == b"2"


# ------------------------------------------------------------ kafka source
N = 5
RECORDS = [(b"k", orjson.dumps({"n": i})) for i in range(N)]


def _n_is(target_topic: str, n: int) -> Pick:
    return lambda topic, m, _id, _via: (
        topic == target_topic and m.value is not None and orjson.loads(m.value).get("n") == n
    )


async def _wait(check: Callable[[], bool], what: str, within_s: float = 20) -> None:
    for _ in range(int(within_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} within {within_s}s")


def _offset(event_id: str) -> tuple[int, int]:
    """(partition, offset) of a default (``offset``) id, <topic>-<partition>-<offset>,
    or of a dead letter's id, dlq:<topic>:<partition>:<offset>."""
    _, p, o = event_id.rsplit(":" if event_id.startswith("dlq:") else "-", 2)
    return int(p), int(o)


async def all_of(settings: Settings, out: str) -> list[CloudEvent]:
    """The events on ``out`` once each n of 0..N-1 is there (some maybe twice)."""
    recs = await read_records(
        settings.kafka.bootstrap,
        out,
        N,
        until=lambda rs: {orjson.loads(r.value or b"{}").get("n") for r in rs} >= set(range(N)),
    )
    return [from_kafka(r.key, r.value, list(r.headers)) for r in recs]


async def refused_source(
    ctx: Context,  # noqa: F811
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    topic: str,
    target: str,  # noqa: F811
    records: list[tuple[bytes, bytes]],
    pick: Pick,
    exc: BaseException,
) -> tuple[KafkaTopicSource, list[BaseException], list[str]]:
    """``records`` on ``topic``, then a kafka source started from it to ``target``
    while the broker answers ``exc`` for what ``pick`` chooses.  Returns the source,
    its failures and the ids refused."""
    await produce(settings, topic, records)
    seen: list[str] = []
    monkeypatch.setattr(Publisher, "publish_messages", refusing(pick, exc, seen))
    src = source(ctx, topic, target)
    failures = watch(src)
    await src.start()
    return src, failures, seen


async def test_an_unclassified_refusal_of_a_kafka_source_record_stops_it_uncommitted(
    ctx: Context,  # noqa: F811
    settings: Settings,
    topic: str,
    target: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Publisher.publish_messages
    src, failures, seen = await refused_source(
        ctx, settings, monkeypatch, topic, target, RECORDS, _n_is(target, 2), Bug("a bug")
    )
    try:
        await _wait(lambda: bool(failures), "the source did not stop on the bug")
        st = src.status()
        assert [type(f) for f in failures] == [Bug], failures
        assert st.state == "failed" and not st.dead_letters, st
        partition, offset = _offset(seen[0])
        committed = src.position().get(f"{topic}/{partition}")
        assert committed is None or committed <= offset, (committed, offset)
        assert await read_records(settings.kafka.bootstrap, f"{target}.dlq", 0, 1.0) == []

        monkeypatch.setattr(Publisher, "publish_messages", real)  # the bug fixed
        await src.stop()
        failures.clear()
        await src.start()
        events = await all_of(settings, target)
    finally:
        await src.stop()
    assert failures == []
    assert sorted({e.data["n"] for e in events}) == list(range(N)), events
    assert await read_records(settings.kafka.bootstrap, f"{target}.dlq", 0, 1.0) == []


async def test_a_kafka_source_record_the_broker_refuses_for_good_is_dead_lettered_alone(
    ctx: Context,  # noqa: F811
    settings: Settings,
    topic: str,
    target: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refusal = RecordTooLargeError("produce: the record exceeds kafka.max_request_size")
    src, failures, _ = await refused_source(
        ctx, settings, monkeypatch, topic, target, RECORDS, _n_is(target, 2), refusal
    )
    try:
        events = await read_events(settings.kafka.bootstrap, target, N - 1)
        [letter] = await read_records(settings.kafka.bootstrap, f"{target}.dlq", 1)
        st = src.status()
    finally:
        await src.stop()
    assert failures == [] and st.state != "failed", st
    assert sorted(e.data["n"] for e in events) == [0, 1, 3, 4]
    headers = dict(letter.headers)
    assert headers["eventpipe.dlq.exception.class"].endswith(b"RecordTooLargeError"), headers
    assert orjson.loads(letter.value) == {"n": 2}


async def test_a_dead_letter_the_broker_refuses_for_good_stops_the_kafka_source(
    ctx: Context,  # noqa: F811
    settings: Settings,
    topic: str,
    target: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = b"\xffnot json"  # a decode error: its record is a dead letter
    real = Publisher.publish_messages
    dlq = f"{target}.dlq"
    refusal = ke.TopicAuthorizationFailedError()  # a class: refused for good
    with caplog.at_level(logging.ERROR, logger="eventpipe"):
        src, failures, seen = await refused_source(
            ctx,
            settings,
            monkeypatch,
            topic,
            target,
            [*RECORDS[:2], (b"k", bad), *RECORDS[2:]],
            lambda t, _m, _i, _via: t == dlq,
            refusal,
        )
        try:
            await _wait(lambda: bool(failures), "the source did not stop on the refused letter")
            st = src.status()
            assert st.state == "failed", st
            assert seen, "no dead letter was written"
            partition, offset = _offset(seen[0])
            assert offset == 2, seen
            committed = src.position().get(f"{topic}/{partition}")
            assert committed is None or committed <= offset, (committed, src.position())
        finally:
            await src.stop()
    assert [type(f).__name__ for f in failures] == ["DeadLetterRefusedError"], failures
    lines = [r.getMessage() for r in caplog.records if "dead letter" in r.getMessage()]
    where = f"{topic}/{partition}@2"
    assert any(where in line and dlq in line for line in lines), lines
    assert not any("dropped" in line for line in lines), lines
    assert await read_records(settings.kafka.bootstrap, dlq, 0, 1.0) == []

    monkeypatch.setattr(Publisher, "publish_messages", real)  # write access granted
    src = source(ctx, topic, target, name=src.name)
    failures = watch(src)
    await src.start()
    try:
        [letter] = await read_records(settings.kafka.bootstrap, dlq, 1)
        events = await all_of(settings, target)
    finally:
        await src.stop()
    assert failures == []
    assert letter.value == bad
    assert sorted({e.data["n"] for e in events}) == list(range(N))
