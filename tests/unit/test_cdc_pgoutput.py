"""The pgoutput decoder on hand-built protocol messages (protocol version 1)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest

from eventpipe.connectors.postgres_cdc import pgoutput as pg
from eventpipe.connectors.postgres_cdc.lsn import format_lsn, parse_lsn


def tup(*values: bytes | str | None) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == "u":
            out += b"u"
        else:
            assert isinstance(v, bytes)
            out += b"t" + struct.pack(">i", len(v)) + v
    return out


def relation(oid: int = 16400, replident: bytes = b"d") -> bytes:
    cols = [(1, b"id", 23, -1), (0, b"name", 25, -1), (0, b"body", 25, -1)]
    out = b"R" + struct.pack(">I", oid) + b"shop\x00orders\x00" + replident
    out += struct.pack(">h", len(cols))
    for flags, name, typ, mod in cols:
        out += bytes([flags]) + name + b"\x00" + struct.pack(">Ii", typ, mod)
    return out


def test_begin_and_commit() -> None:
    ts = 789_000_000_000_123  # microseconds since 2000-01-01
    b = pg.decode(b"B" + struct.pack(">QqI", 0x16_B374D848, ts, 4242))
    assert b == pg.Begin(0x16_B374D848, ts, 4242)
    c = pg.decode(b"C" + struct.pack(">BQQq", 0, 0x100, 0x130, ts))
    assert c == pg.Commit(0, 0x100, 0x130, ts)
    assert pg.pg_time(ts) == datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts)
    assert pg.pg_time(0) == datetime(2000, 1, 1, tzinfo=UTC)
    assert pg.unix_ms(0) == 946_684_800_000
    assert pg.unix_ms(1_500) == 946_684_800_001


def test_relation_with_key_flags() -> None:
    r = pg.decode(relation(replident=b"f"))
    assert isinstance(r, pg.Relation)
    assert (r.oid, r.namespace, r.name, r.replident) == (16400, "shop", "orders", "f")
    assert [(c.name, c.type_oid, c.typmod, c.key) for c in r.columns] == [
        ("id", 23, -1, True),
        ("name", 25, -1, False),
        ("body", 25, -1, False),
    ]


def test_insert_update_delete_tuples() -> None:
    ins = pg.decode(b"I" + struct.pack(">I", 16400) + b"N" + tup(b"1", b"ada", None))
    assert ins == pg.Insert(16400, [b"1", b"ada", None])

    upd = pg.decode(b"U" + struct.pack(">I", 16400) + b"N" + tup(b"1", b"bob", "u"))
    assert isinstance(upd, pg.Update)
    assert upd.old_kind is None and upd.old is None
    assert upd.new == [b"1", b"bob", pg.UNCHANGED]

    upd_k = pg.decode(
        b"U"
        + struct.pack(">I", 16400)
        + b"K"
        + tup(b"1", None, None)
        + b"N"
        + tup(b"2", b"x", b"y")
    )
    assert isinstance(upd_k, pg.Update)
    assert (upd_k.old_kind, upd_k.old, upd_k.new) == ("K", [b"1", None, None], [b"2", b"x", b"y"])

    upd_o = pg.decode(
        b"U" + struct.pack(">I", 16400) + b"O" + tup(b"1", b"a", b"b") + b"N" + tup(b"1", b"c", "u")
    )
    assert isinstance(upd_o, pg.Update) and upd_o.old_kind == "O"

    dele = pg.decode(b"D" + struct.pack(">I", 16400) + b"K" + tup(b"7", None, None))
    assert dele == pg.Delete(16400, "K", [b"7", None, None])


def test_binary_values_stay_bytes() -> None:
    raw = b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"b" + struct.pack(">i", 4)
    raw += b"\x00\x00\x00\x07"
    assert pg.decode(raw) == pg.Insert(1, [b"\x00\x00\x00\x07"])


def test_truncate_message_origin_type() -> None:
    t = pg.decode(b"T" + struct.pack(">iB", 2, 3) + struct.pack(">II", 16400, 16401))
    assert t == pg.Truncate(3, [16400, 16401])
    m = pg.decode(
        b"M" + struct.pack(">BQ", 1, 0xABC) + b"app.audit\x00" + struct.pack(">i", 3) + b"hey"
    )
    assert m == pg.Message(True, 0xABC, "app.audit", b"hey")
    m2 = pg.decode(b"M" + struct.pack(">BQ", 0, 5) + b"p\x00" + struct.pack(">i", 0))
    assert m2 == pg.Message(False, 5, "p", b"")
    o = pg.decode(b"O" + struct.pack(">Q", 99) + b"node_a\x00")
    assert o == pg.Origin(99, "node_a")
    y = pg.decode(b"Y" + struct.pack(">I", 17000) + b"public\x00mood\x00")
    assert y == pg.Type(17000, "public", "mood")


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"", "empty"),
        (b"X\x00", "unsupported pgoutput message 'X'"),
        (b"B\x00\x01", "truncated or malformed 'B'"),
        (b"I" + struct.pack(">I", 1) + b"Q" + tup(b"1"), "expected 'N'"),
        (b"D" + struct.pack(">I", 1) + b"N" + tup(b"1"), "expected 'K' or 'O'"),
        (
            b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"z",
            "unknown tuple value kind",
        ),
    ],
)
def test_malformed_messages_are_protocol_errors(raw: bytes, match: str) -> None:
    with pytest.raises(pg.ProtocolError, match=match) as ei:
        pg.decode(raw)
    assert not ei.value.retriable


def test_lsn_text_round_trip() -> None:
    assert parse_lsn("16/B374D848") == 0x16_B374D848
    assert format_lsn(0x16_B374D848) == "16/B374D848"
    assert format_lsn(parse_lsn("0/0")) == "0/0"
    with pytest.raises(ValueError):
        parse_lsn("12345")
