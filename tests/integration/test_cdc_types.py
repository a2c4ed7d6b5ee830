"""Every column type, through real pgoutput and through a snapshot read of the same row."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from eventpipe.envelope.kafka import from_kafka
from eventpipe.settings import Settings
from tests.helpers import read_events, read_records
from tests.integration.test_cdc_support import caught_up, cdc_source, execute, unique

COLUMNS = """
    id int primary key,
    i2 smallint, i8 bigint, num numeric(12, 3), num_nan numeric, r real, d double precision,
    d_inf double precision, b boolean, t text, vc varchar(10), ch char(3), u uuid,
    j json, jb jsonb, jb_big jsonb, ba bytea, dt date, tm time, tmtz timetz, ts timestamp,
    tstz timestamptz, iv interval, ia int[], ta text[], tsa timestamptz[], jba jsonb[],
    na numeric[], i2d int[][], mood {mood}, moods {mood}[], pos {posint}, inet_ inet,
    cidr_ cidr, mac macaddr, money_ money, bits bit(4), vbits varbit, pt point,
    tsv tsvector, rng int4range, comp {pair}, nul text
"""
VALUES = """(
    1, -7, 9223372036854775807, 12345.678, 'NaN', 1.5, 0.1, 'Infinity', true, 'grüße ✓',
    'abc', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"a": [1, 2.5]}}',
    '{{"b": null, "c": "x"}}', '{{"n": 123456789012345678901234567890}}', '\\x00ff10',
    '2024-02-29', '13:14:15.25', '13:14:15+02', '2024-01-02 03:04:05.5',
    '2024-01-02 03:04:05.123456+02', '1 year 2 months 3 days 04:05:06.5', '{{1,2,NULL}}',
    '{{"a b","c\\"d",NULL}}', '{{"2024-01-02 03:04:05+00"}}', ARRAY['{{"k": 1}}'::jsonb],
    '{{1.50,NaN}}', '{{{{1,2}},{{3,4}}}}', 'happy', '{{happy,sad}}', 5, '10.1.2.3/16',
    '10.1.0.0/16', '08:00:2b:01:02:03', 12.5, B'1010', B'101', '(1.5,2)',
    'a fat cat', '[1,5)', '(1,x)', NULL
)"""

EXPECTED: dict[str, Any] = {
    "id": 1,
    "i2": -7,
    "i8": 9223372036854775807,
    "num": "12345.678",
    "num_nan": "NaN",
    "r": 1.5,
    "d": 0.1,
    "d_inf": "Infinity",
    "b": True,
    "t": "grüße ✓",
    "vc": "abc",
    "ch": "ab ",
    "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "j": {"a": [1, 2.5]},
    "jb": {"b": None, "c": "x"},
    "jb_big": {"n": 1.2345678901234568e29},  # how a JSON parser reads it back; see below
    "ba": base64.b64encode(b"\x00\xff\x10").decode(),
    "dt": "2024-02-29",
    "tm": "13:14:15.25",
    "tmtz": "13:14:15+02",
    "ts": "2024-01-02T03:04:05.5Z",
    "tstz": "2024-01-02T01:04:05.123456Z",
    "iv": "P1Y2M3DT4H5M6.5S",
    "ia": [1, 2, None],
    "ta": ["a b", 'c"d', None],
    "tsa": ["2024-01-02T03:04:05Z"],
    "jba": [{"k": 1}],
    "na": ["1.50", "NaN"],
    "i2d": [[1, 2], [3, 4]],
    "mood": "happy",
    "moods": ["happy", "sad"],
    "pos": 5,
    "inet_": "10.1.2.3/16",
    "cidr_": "10.1.0.0/16",
    "mac": "08:00:2b:01:02:03",
    "money_": "$12.50",
    "bits": "1010",
    "vbits": "101",
    "pt": "(1.5,2)",
    "tsv": "'a' 'cat' 'fat'",
    "rng": "[1,5)",
    "comp": "(1,x)",
    "nul": None,
}


async def _types(settings: Settings) -> tuple[str, str, str]:
    mood, posint, pair = unique("mood"), unique("posint"), unique("pair")
    await execute(
        settings,
        f"create type {mood} as enum ('happy', 'sad')",
        f"create domain {posint} as int check (value > 0)",
        f"create type {pair} as (a int, b text)",
    )
    return mood, posint, pair


async def test_every_type_in_stream_and_snapshot(settings: Settings) -> None:
    mood, posint, pair = await _types(settings)
    t, snap = unique("types"), unique("types_snap")
    cols = COLUMNS.format(mood=mood, posint=posint, pair=pair)
    values = VALUES.format()
    await execute(
        settings,
        f"create table {t} ({cols})",
        f"create table {snap} ({cols})",
        f"insert into {snap} values {values}",
    )
    async with cdc_source(settings, tables=[t, snap], snapshot="initial") as src:
        await execute(settings, f"insert into {t} values {values}")
        await caught_up(settings, src)
        # the row may also be read by the initial snapshot of t, if it started after the insert
        records = await read_records(settings.kafka.bootstrap, f"{src.name}.public.{t}", 1)
        [read] = await read_events(settings.kafka.bootstrap, f"{src.name}.public.{snap}", 1)
    events = [from_kafka(r.key, r.value, list(r.headers)) for r in records]
    [streamed] = [e for e in events if e.data["op"] == "c"]
    assert read.data["op"] == "r"
    # an integer beyond 64 bits in jsonb is written with all its digits
    assert all(
        b'"jb_big":{"n": 123456789012345678901234567890}' in (r.value or b"") for r in records
    )
    got = streamed.data["after"]
    money = got.pop("money_")
    assert money.replace(",", "").endswith("12.50")  # the currency symbol follows lc_monetary
    expected = {k: v for k, v in EXPECTED.items() if k != "money_"}
    assert got == expected
    # a snapshot read converts exactly as the stream does
    snap_after = read.data["after"]
    snap_after.pop("money_")
    assert snap_after == expected
    assert read.data["source"]["snapshot"] == "true"


@pytest.mark.parametrize("mode", ["number"])
async def test_numeric_as_number(settings: Settings, mode: str) -> None:
    t = unique("nums")
    await execute(settings, f"create table {t} (id int primary key, a numeric, b numeric(6, 2))")
    async with cdc_source(settings, tables=[t], snapshot="never", numeric=mode) as src:
        await execute(settings, f"insert into {t} values (1, 42, 3.25), (2, 'NaN', -1.5)")
        await caught_up(settings, src)
        events = await read_events(settings.kafka.bootstrap, f"{src.name}.public.{t}", 2)
    rows = {e.partitionkey: e.data["after"] for e in events}
    assert rows["1"] == {"id": 1, "a": 42, "b": 3.25}
    assert rows["2"] == {"id": 2, "a": "NaN", "b": -1.5}
