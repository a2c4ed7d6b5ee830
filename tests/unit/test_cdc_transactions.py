"""Transaction assembly on hand-built pgoutput messages: ids, key changes, where the
slot may advance to, and the snapshot window at its high watermark."""

from __future__ import annotations

import logging
import struct
from typing import Any

import orjson

from eventpipe.connectors.postgres_cdc.events import Capture, EventBuilder
from eventpipe.connectors.postgres_cdc.heartbeat import HEARTBEAT_PREFIX, WATERMARK_PREFIX
from eventpipe.connectors.postgres_cdc.snapshot import Chunk, MvccSnapshot
from eventpipe.connectors.postgres_cdc.snapshot_window import SnapshotWindow
from eventpipe.connectors.postgres_cdc.transactions import ChangeEvents, TransactionAssembler
from eventpipe.connectors.postgres_cdc.types import TypeRegistry
from eventpipe.dlq.record import DeadLetter
from eventpipe.envelope.kafka import from_kafka

REL = 16400


def tup(*values: bytes | None) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        out += b"n" if v is None else b"t" + struct.pack(">i", len(v)) + v
    return out


def relation() -> bytes:
    out = b"R" + struct.pack(">I", REL) + b"public\x00t\x00d" + struct.pack(">h", 2)
    out += b"\x01id\x00" + struct.pack(">Ii", 23, -1)
    out += b"\x00v\x00" + struct.pack(">Ii", 25, -1)
    return out


def begin(final_lsn: int, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, 789_000_000_000_000, xid)


def commit(commit_lsn: int, end_lsn: int) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, commit_lsn, end_lsn, 789_000_000_000_000)


def insert(i: int, v: bytes) -> bytes:
    return b"I" + struct.pack(">I", REL) + b"N" + tup(str(i).encode(), v)


def message(lsn: int, prefix: str, content: bytes, transactional: bool = False) -> bytes:
    head = b"M" + struct.pack(">BQ", int(transactional), lsn) + prefix.encode() + b"\x00"
    return head + struct.pack(">i", len(content)) + content


def reader() -> TransactionAssembler:
    builder = EventBuilder(
        name="s",
        prefix="s",
        type_prefix="s",
        source_uri="/s",
        database="db",
        topic_template="{prefix}.{schema}.{table}",
        message_topic="{prefix}.message",
        toast_placeholder="__u",
    )
    none: Any = None
    dead: list[DeadLetter] = []
    log = logging.getLogger(__name__)
    capture = Capture(frozenset({"public.t"}), {"public.t": ["id"]}, builder, TypeRegistry())
    window = SnapshotWindow(
        capture,
        slot="slot_s",
        state=none,
        connect=none,
        chunk_size=2048,
        poll_s=1.0,
        dead=dead.append,
        log=log,
    )
    return TransactionAssembler(
        capture,
        handler=ChangeEvents(capture),
        window=window,
        emit_messages=True,
        dead=dead.append,
        log=log,
    )


def run(r: TransactionAssembler, *datas: bytes) -> tuple[list[Any], int]:
    outs, upto = r.process(list(range(len(datas))), list(datas))
    return [from_kafka(m.key, m.value, m.headers) for _, m, _ in outs], upto


def test_ids_and_where_the_slot_may_advance() -> None:
    r = reader()
    events, upto = run(
        r,
        relation(),
        begin(0x1000, 700),
        insert(1, b"a"),
        insert(2, b"b"),
        message(0, "app", b"x", transactional=True),
        commit(0x1000, 0x1030),
        message(0x1080, HEARTBEAT_PREFIX, b"slot_s"),
    )
    assert [e.id for e in events] == ["0/1000:0", "0/1000:1", "0/1000:2"]
    assert [e.type for e in events] == ["s.public.t.created", "s.public.t.created", "s.message"]
    # a non-transactional message carries the END of its record: the slot may go there,
    # not beyond (the next record starts exactly there)
    assert upto == 0x1080
    events, upto = run(r, begin(0x2000, 701), insert(3, b"c"), commit(0x2000, 0x2040))
    assert upto == 0x2040 and events[0].id == "0/2000:0"


def test_key_change_is_a_delete_and_a_create() -> None:
    r = reader()
    upd = b"U" + struct.pack(">I", REL) + b"K" + tup(b"1", None) + b"N" + tup(b"5", b"z")
    events, _ = run(r, relation(), begin(0x3000, 702), upd, commit(0x3000, 0x3030))
    assert [(e.data["op"], e.partitionkey, e.id) for e in events] == [
        ("d", "1", "0/3000:0"),
        ("c", "5", "0/3000:1"),
    ]
    assert events[0].data["before"] == {"id": 1}


def test_chunk_rows_come_out_at_the_high_watermark_minus_newer_changes() -> None:
    r = reader()
    assert r.window is not None
    r.window.chunk = Chunk(
        task_id=9,
        table="public.t",
        snapshot=MvccSnapshot.parse("700:705:703"),
        names=["id", "v"],
        type_oids=[23, 25],
        # row 3 already reflects transaction 701, which the read saw
        rows={
            (1,): {"id": 1, "v": "old"},
            (2,): {"id": 2, "v": "old"},
            (3,): {"id": 3, "v": "seen"},
        },
        last_key=["3"],
        done=True,
        read_at_ms=1000,
        marker="slot_s:9:abc",
    )
    upd2 = b"U" + struct.pack(">I", REL) + b"N" + tup(b"2", b"new")
    upd3 = b"U" + struct.pack(">I", REL) + b"N" + tup(b"3", b"seen")
    events, upto = run(
        r,
        relation(),
        begin(0x4000, 703),  # in progress when the chunk was read: newer than it
        upd2,
        commit(0x4000, 0x4030),
        begin(0x4100, 701),  # seen by the chunk's read
        upd3,
        commit(0x4100, 0x4130),
        message(0x4200, WATERMARK_PREFIX, b"another:1:zzz"),  # not ours
        message(0x4300, WATERMARK_PREFIX, b"slot_s:9:abc"),
    )
    ops = [(e.data["op"], e.partitionkey, e.data["after"]["v"]) for e in events]
    # row 2 changed after the read: the change is the news, its read is dropped
    assert ops == [("u", "2", "new"), ("u", "3", "seen"), ("r", "1", "old"), ("r", "3", "seen")]
    assert [e.id for e in events[2:]] == ["0/4300:r0", "0/4300:r1"]
    assert r.window.chunk is None and upto == 0x4300


def test_a_dead_lettered_row_keeps_json_values_as_json() -> None:
    from eventpipe.connectors.postgres_cdc.snapshot_window import row_texts

    exact = orjson.Fragment(b"0.1000000000000000055511151231257827")
    row = {"id": 7, "doc": {"p": exact, "ok": True}, "t": "x", "n": None}
    assert row_texts(row) == {
        "id": "7",
        "doc": '{"p":0.1000000000000000055511151231257827,"ok":true}',
        "t": "x",
        "n": None,
    }
