"""Streaming changes from a real PostgreSQL slot to the real broker."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from eventpipe.connectors.postgres_cdc.checks import CdcSetupError
from eventpipe.connectors.postgres_cdc.lsn import parse_lsn
from eventpipe.dlq.record import DeadLetter
from eventpipe.settings import Settings
from tests.helpers import read_events, read_records
from tests.integration.test_cdc_support import (
    caught_up,
    cdc_source,
    execute,
    flush_lsn,
    slot_row,
    unique,
    wait_slot_confirmed,
)


def topic_of(src_name: str, table: str) -> str:
    return f"{src_name}.public.{table}"


async def test_insert_update_delete_truncate(settings: Settings) -> None:
    t = unique("orders")
    await execute(settings, f"create table {t} (id int primary key, status text, total numeric)")
    async with cdc_source(settings, tables=[t], snapshot="never") as src:
        await execute(
            settings,
            f"insert into {t} values (1, 'new', 9.5), (2, 'new', 1)",
            f"update {t} set status = 'paid' where id = 1",
            f"delete from {t} where id = 2",
            f"truncate {t}",
        )
        await caught_up(settings, src)
        events = await read_events(settings.kafka.bootstrap, topic_of(src.name, t), 5)
        for _ in range(100):  # the lag monitor counts what the reader emitted
            st = src.status()
            if st.total_out >= 5 and st.details["slot_lag_bytes"] is not None:
                break
            await asyncio.sleep(0.1)
    # status(): the slot is read here, five events went out, its lag is known
    assert (st.type, st.state, st.details["replication"]) == ("postgres_cdc", "running", "active")
    assert st.total_out == 5 and st.details["slot"] == src.slot
    assert st.details["position"] and isinstance(st.details["slot_lag_bytes"], int)
    assert src.health() == "ok" and src.check_name == f"cdc:{src.name}"
    assert len(events) == 5
    by_op = {(e.data["op"], e.partitionkey): e for e in events}
    c1, u1, d2 = by_op[("c", "1")], by_op[("u", "1")], by_op[("d", "2")]
    trunc = by_op[("t", None)]
    assert c1.type == f"{src.name}.public.{t}.created"
    assert c1.data["after"] == {"id": 1, "status": "new", "total": "9.5"}
    assert c1.data["before"] is None
    assert u1.type.endswith(".updated") and u1.data["before"] == {"id": 1}  # DEFAULT: key only
    assert u1.data["after"]["status"] == "paid"
    assert d2.type.endswith(".deleted") and d2.data == d2.data | {
        "before": {"id": 2},
        "after": None,
    }
    assert trunc.type.endswith(".truncated") and trunc.data["op"] == "t"
    # ids: commit LSN + position; the two inserts share a transaction
    c2 = by_op[("c", "2")]
    assert c1.id.split(":")[0] == c2.id.split(":")[0] and {c1.id[-2:], c2.id[-2:]} == {":0", ":1"}
    assert c1.time is not None and c1.extensions["cdclsn"] == c1.id.split(":")[0]
    src_block = c1.data["source"]
    assert src_block["connector"] == "postgresql" and src_block["table"] == t
    assert src_block["schema"] == "public" and isinstance(src_block["txId"], int)
    assert src_block["ts_ms"] == int(c1.time.timestamp() * 1000)
    assert src.reader is not None and src.reader.position > 0


async def test_replica_identity_full_before_images_and_key_change(settings: Settings) -> None:
    t = unique("acct")
    await execute(
        settings,
        f"create table {t} (id int primary key, owner text, balance int)",
        f"alter table {t} replica identity full",
    )
    async with cdc_source(settings, tables=[t], snapshot="never") as src:
        await execute(
            settings,
            f"insert into {t} values (1, 'ada', 10)",
            f"update {t} set balance = 20 where id = 1",
            f"update {t} set id = 5 where id = 1",
            f"delete from {t} where id = 5",
        )
        await caught_up(settings, src)
        events = await read_events(settings.kafka.bootstrap, topic_of(src.name, t), 5)
    ops = [(e.data["op"], e.partitionkey) for e in events]
    upd = next(e for e in events if e.data["op"] == "u")
    assert upd.data["before"] == {"id": 1, "owner": "ada", "balance": 10}
    assert upd.data["after"] == {"id": 1, "owner": "ada", "balance": 20}
    # a key change is a delete of the old key and a create of the new one (as Debezium)
    assert ("d", "1") in ops and ("c", "5") in ops and ops.count(("d", "5")) == 1
    dele = next(e for e in events if e.data["op"] == "d" and e.partitionkey == "5")
    assert dele.data["before"] == {"id": 5, "owner": "ada", "balance": 20}


@pytest.mark.parametrize("identity", ["default", "full"])
async def test_unchanged_toast_value_is_never_passed_off(settings: Settings, identity: str) -> None:
    t = unique("docs")
    big = "x" * 20_000
    await execute(
        settings,
        f"create table {t} (id int primary key, title text, body text)",
        f"alter table {t} alter column body set storage external",  # out of line, uncompressed
        f"alter table {t} replica identity {identity}",
        (f"insert into {t} values (1, 'a', %s)", (big,)),
    )
    async with cdc_source(
        settings, tables=[t], snapshot="never", toast_placeholder="__unavailable"
    ) as src:
        await execute(settings, f"update {t} set title = 'b' where id = 1")
        await caught_up(settings, src)
        [ev] = await read_events(settings.kafka.bootstrap, topic_of(src.name, t), 1)
    assert ev.data["after"]["title"] == "b"
    if identity == "default":
        assert ev.data["after"]["body"] == "__unavailable"
        assert ev.data["unchanged_toast_columns"] == ["body"]
    else:  # the old row carries the value, and it did not change
        assert ev.data["after"]["body"] == big
        assert ev.data["before"]["body"] == big
        assert "unchanged_toast_columns" not in ev.data


async def test_schema_change_mid_stream(settings: Settings) -> None:
    t = unique("evolve")
    await execute(settings, f"create table {t} (id int primary key, a text)")
    async with cdc_source(settings, tables=[t], snapshot="never") as src:
        await execute(settings, f"insert into {t} values (1, 'one')")
        await caught_up(settings, src)
        # stop reading, so the DDL and the rows around it arrive in one batch
        await src.stop()
        await execute(
            settings,
            f"alter table {t} add column b int default 7",
            f"insert into {t} values (2, 'two', 2)",
            f"alter table {t} drop column a",
            f"insert into {t} values (3, 3)",
            f"update {t} set b = 30 where id = 3",
        )
        await src.start()
        await caught_up(settings, src)
        events = await read_events(settings.kafka.bootstrap, topic_of(src.name, t), 4)
    after = {(e.partitionkey, e.data["op"]): e.data["after"] for e in events}
    assert after[("1", "c")] == {"id": 1, "a": "one"}
    assert after[("2", "c")] == {"id": 2, "a": "two", "b": 2}
    assert after[("3", "c")] == {"id": 3, "b": 3}
    assert after[("3", "u")] == {"id": 3, "b": 30}


async def test_large_transaction(settings: Settings) -> None:
    t = unique("bulk")
    n = 100_000
    await execute(settings, f"create table {t} (id int primary key, v text)")
    async with cdc_source(settings, tables=[t], snapshot="never", batch_size=5000) as src:
        started = time.monotonic()
        await execute(
            settings, f"insert into {t} select g, 'row ' || g from generate_series(1, {n}) g"
        )
        await caught_up(settings, src, within_s=120)
        took = time.monotonic() - started
        records = await read_records(settings.kafka.bootstrap, topic_of(src.name, t), n, timeout=90)
    ids = [dict(r.headers)["ce_id"].decode() for r in records]
    assert len(ids) == n and len(set(ids)) == n
    lsns = {i.split(":")[0] for i in ids}
    assert len(lsns) == 1  # one transaction: one commit LSN, positions 0..n-1
    assert {int(i.split(":")[1]) for i in ids} == set(range(n))
    assert took < 60, f"{n} rows took {took:.1f}s"


async def test_table_without_primary_key(settings: Settings) -> None:
    t = unique("nokey")
    await execute(settings, f"create table {t} (code text, qty int)")
    with pytest.raises(CdcSetupError) as ei:
        async with cdc_source(settings, tables=[t], snapshot="never"):
            pass
    msg = str(ei.value)
    assert f"table public.{t} has no primary key" in msg
    assert f"ALTER TABLE public.{t} REPLICA IDENTITY FULL;" in msg
    assert f"key_columns.public.{t}" in msg
    # the configured fallback: REPLICA IDENTITY FULL and key columns
    await execute(settings, f"alter table {t} replica identity full")
    async with cdc_source(settings, tables=[t], snapshot="never", key_columns={t: ["code"]}) as src:
        await execute(
            settings,
            f"insert into {t} values ('a', 1)",
            f"update {t} set qty = 2 where code = 'a'",
            f"delete from {t} where code = 'a'",
        )
        await caught_up(settings, src)
        events = await read_events(settings.kafka.bootstrap, topic_of(src.name, t), 3)
    assert [e.partitionkey for e in events] == ["a", "a", "a"]
    assert [e.data["op"] for e in events] == ["c", "u", "d"]
    assert events[2].data["before"] == {"code": "a", "qty": 2}


async def test_setup_problems_are_reported_at_once_with_the_fix(settings: Settings) -> None:
    t, missing = unique("ok"), unique("missing")
    nothing = unique("nothing")
    await execute(
        settings,
        f"create table {t} (id int primary key)",
        f"create table {nothing} (id int primary key)",
        f"alter table {nothing} replica identity nothing",
    )
    with pytest.raises(CdcSetupError) as ei:
        async with cdc_source(
            settings,
            tables=[t, missing, nothing],
            create_publication=False,
            create_slot=False,
        ):
            pass
    problems = "\n".join(ei.value.problems)
    assert len(ei.value.problems) == 4, problems
    assert f"table public.{missing} does not exist" in problems
    assert f"ALTER TABLE public.{nothing} REPLICA IDENTITY DEFAULT;" in problems
    assert "CREATE PUBLICATION" in problems and f"FOR TABLE public.{t}" in problems
    assert "pg_create_logical_replication_slot" in problems
    assert not ei.value.retriable


async def test_logical_messages_and_dead_letters(settings: Settings) -> None:
    t = unique("blobs")
    await execute(settings, f"create table {t} (id int primary key, blob text)")
    big = orjson.dumps([str(i) * 50 for i in range(20_000)]).decode()  # ~2 MB: too large
    async with cdc_source(settings, tables=[t], snapshot="never", emit_messages=True) as src:
        await execute(
            settings,
            f"insert into {t} values (1, 'small')",
            (f"insert into {t} values (2, %s)", (big,)),
            f"insert into {t} values (3, 'after')",
            "select pg_logical_emit_message(true, 'app.audit', 'hello')",
        )
        last_change = await flush_lsn(settings)  # the message's commit is flushed
        await caught_up(settings, src)
        events = await read_events(settings.kafka.bootstrap, topic_of(src.name, t), 2)
        messages = await read_events(settings.kafka.bootstrap, f"{src.name}.message", 1)
        dead = await read_records(settings.kafka.bootstrap, f"{src.name}.dlq", 1)
        confirmed = await slot_row(settings, src.slot)
        # WAL written since (heartbeats, the source's own cdc_status row) holds nothing
        # for the slot: it is confirmed too, once the reader has read past it
        await wait_slot_confirmed(settings, src.slot, await flush_lsn(settings), within_s=10)
    # the stream went on around the row the broker refused; that row is a dead letter
    assert sorted(e.partitionkey or "" for e in events) == ["1", "3"]
    [letter] = [DeadLetter.from_kafka(r.key, r.value, list(r.headers)) for r in dead]
    assert letter.stage == "source" and letter.key == b"2"
    assert letter.value is None and letter.payload_size and letter.payload_size > 2_000_000
    assert letter.exception_class.endswith("RecordTooLargeError")
    assert letter.origin.topic == topic_of(src.name, t)
    assert any(m.data["message"]["prefix"] == "app.audit" for m in messages)
    m = next(m for m in messages if m.data["message"]["prefix"] == "app.audit")
    assert m.data["message"]["content"] == "aGVsbG8=" and m.data["op"] == "m"
    # the slot confirmed past the dead-lettered row and the logical message
    assert confirmed is not None and parse_lsn(confirmed[0]) >= last_change


async def test_restart_resumes_from_the_slot(settings: Settings) -> None:
    t = unique("resume")
    await execute(settings, f"create table {t} (id int primary key)")
    async with cdc_source(settings, tables=[t], snapshot="never") as src:
        await execute(settings, f"insert into {t} values (1)")
        await caught_up(settings, src)
        await src.stop()
        await execute(settings, f"insert into {t} values (2)", f"insert into {t} values (3)")
        await src.start()
        await caught_up(settings, src)
        events = await read_events(settings.kafka.bootstrap, topic_of(src.name, t), 3)
    assert sorted(e.partitionkey or "" for e in events) == ["1", "2", "3"]
    assert len({e.id for e in events}) == 3  # nothing sent twice after a clean stop


async def test_standby_takes_over_in_process(settings: Settings) -> None:
    t = unique("standby")
    await execute(settings, f"create table {t} (id int primary key)")
    name = unique("stb")
    async with (
        cdc_source(settings, name, tables=[t], snapshot="never") as first,
        cdc_source(
            settings, name, start=False, tables=[t], snapshot="never", standby_poll_s=0.1
        ) as second,
    ):
        await second.start()
        await execute(settings, f"insert into {t} values (1)")
        await caught_up(settings, first)
        assert first.active and not second.active and second.reader is None
        await first.stop()  # releases the lock: the standby takes over
        await execute(settings, f"insert into {t} values (2)")
        await caught_up(settings, second)
        assert second.active
        events = await read_events(settings.kafka.bootstrap, topic_of(name, t), 2)
    assert sorted(e.partitionkey or "" for e in events) == ["1", "2"]


async def test_consumers_see_keys_on_stable_partitions(settings: Settings) -> None:
    t = unique("keys")
    await execute(settings, f"create table {t} (id int primary key, v int)")
    async with cdc_source(settings, tables=[t], snapshot="never") as src:
        await execute(settings, f"insert into {t} select g, 0 from generate_series(1, 50) g")
        await execute(settings, f"update {t} set v = v + 1")
        await caught_up(settings, src)
        consumer = AIOKafkaConsumer(
            topic_of(src.name, t),
            bootstrap_servers=settings.kafka.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        try:
            seen: dict[bytes, set[int]] = {}
            got = 0
            deadline = time.monotonic() + 20
            while got < 100 and time.monotonic() < deadline:
                for tp, recs in (await consumer.getmany(timeout_ms=200)).items():
                    for r in recs:
                        assert r.key is not None
                        seen.setdefault(r.key, set()).add(tp.partition)
                        got += 1
        finally:
            await consumer.stop()
    assert got == 100 and all(len(p) == 1 for p in seen.values())
