"""Every column type, through real pgoutput and through a snapshot read of the same row."""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal
from typing import Any

import pytest

from eventpipe.envelope.kafka import from_kafka
from eventpipe.settings import Settings
from tests.helpers import read_events, read_records
from tests.integration.test_cdc_support import caught_up, cdc_source, execute, fetch, unique
from tests.integration.test_pipeline_support import running, with_pipelines

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
        b'"jb_big":{"n":123456789012345678901234567890}' in (r.value or b"") for r in records
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


def _exact(text: str | bytes) -> Any:
    """A JSON document with every number as a Decimal: what "the same number" means."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


JSON_DOC = (
    '{"p": 0.1000000000000000055511151231257827, "f": 1e400, "tiny": -1e-400,'
    ' "big": 123456789012345678901234567890, "plain": 1.5, "s": "1e400",'
    ' "arr": [0.30000000000000004, 1E+2, 12345678901234567890123, 2.50]}'
)


async def test_json_numbers_keep_their_digits(settings: Settings) -> None:
    """json and jsonb values arrive as PostgreSQL holds them: no number is rounded to a
    double, and one a double cannot hold (1e400) does not send the row away."""
    t, snap = unique("jnum"), unique("jnum_snap")
    cols = "id int primary key, j json, jb jsonb, jscalar jsonb, jarr json[]"
    values = (
        "(1, %(doc)s::text::json, %(doc)s::text::jsonb, '1e400',"
        " ARRAY[%(doc)s::text::json, '-0.1000000000000000055511151231257827'])"
    )
    await execute(
        settings,
        f"create table {t} ({cols})",
        f"create table {snap} ({cols})",
        (f"insert into {snap} values {values}", {"doc": JSON_DOC}),
    )
    async with cdc_source(settings, tables=[t, snap], snapshot="initial") as src:
        await execute(settings, (f"insert into {t} values {values}", {"doc": JSON_DOC}))
        await caught_up(settings, src)
        streamed = await read_records(settings.kafka.bootstrap, f"{src.name}.public.{t}", 1)
        read = await read_records(settings.kafka.bootstrap, f"{src.name}.public.{snap}", 1)
    [(j, jb, jscalar, jarr)] = await fetch(
        settings, f"select j::text, jb::text, jscalar::text, to_json(jarr)::text from {t}"
    )
    expected = {
        "j": _exact(j),
        "jb": _exact(jb),
        "jscalar": _exact(jscalar),
        "jarr": _exact(jarr),
    }
    assert expected["jb"]["f"] == Decimal("1e400")  # the oracle itself holds the digits
    for records in (streamed, read):
        assert records, "the row never arrived (dead-lettered?)"
        for r in records:
            after = _exact(r.value or b"")["after"]
            assert {k: after[k] for k in expected} == expected


# ISO 8601 / RFC 3339 as java.time prints it: years 0000-9999 with four digits, a sign
# and more digits beyond (astronomical numbering: 1 BC is 0000, 44 BC is -0043).
EDGE_ROWS = [
    # id, timestamp, timestamptz, date
    (1, "infinity", "infinity", "infinity"),
    (2, "-infinity", "-infinity", "-infinity"),
    (3, "0044-03-15 12:00:00 BC", "0044-03-15 12:00:00.25+00 BC", "0044-03-15 BC"),
    (4, "0001-01-01 00:00:00 BC", "0001-12-31 23:59:59+00 BC", "0001-12-31 BC"),
    (5, "10000-01-01 00:00:00", "10000-01-01 00:00:00+00", "10000-01-01"),
    (6, "4713-01-01 00:00:00 BC", "4713-01-01 00:00:00+00 BC", "4713-01-01 BC"),
    (7, "294276-12-31 23:59:59.999999", "294276-12-31 23:59:59.999999+00", "5874897-12-31"),
    (8, "2024-02-29 01:02:03", "0999-01-01 00:00:00+00", "0001-01-01"),
]
EDGE_EXPECTED = {
    1: ("infinity", "infinity", "infinity"),
    2: ("-infinity", "-infinity", "-infinity"),
    3: ("-0043-03-15T12:00:00Z", "-0043-03-15T12:00:00.25Z", "-0043-03-15"),
    4: ("0000-01-01T00:00:00Z", "0000-12-31T23:59:59Z", "0000-12-31"),
    5: ("+10000-01-01T00:00:00Z", "+10000-01-01T00:00:00Z", "+10000-01-01"),
    6: ("-4712-01-01T00:00:00Z", "-4712-01-01T00:00:00Z", "-4712-01-01"),
    7: ("+294276-12-31T23:59:59.999999Z", "+294276-12-31T23:59:59.999999Z", "+5874897-12-31"),
    8: ("2024-02-29T01:02:03Z", "0999-01-01T00:00:00Z", "0001-01-01"),
}
_ISO = re.compile(r"^([+-]?\d{4,})-(\d\d)-(\d\d)(?:T(\d\d):(\d\d):(\d\d)(\.\d+)?Z)?$")


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400  # floor division: Python's // already rounds down for negative years
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _epoch_us(text: str) -> int:
    """Microseconds since the epoch of an ISO 8601 (expanded year) date or time."""
    m = _ISO.match(text)
    assert m is not None, text
    y, mo, d, hh, mm, ss, frac = m.groups()
    us = _days_from_civil(int(y), int(mo), int(d)) * 86_400_000_000
    if hh is not None:
        us += ((int(hh) * 60 + int(mm)) * 60 + int(ss)) * 1_000_000
        us += round(float(frac or "0") * 1_000_000)
    return us


async def test_timestamps_at_the_edges(settings: Settings) -> None:
    t, snap = unique("tsedge"), unique("tsedge_snap")
    cols = "id int primary key, ts timestamp, tstz timestamptz, d date, tsa timestamp[], da date[]"
    insert = (
        "insert into {} select id, ts::timestamp, tstz::timestamptz, d::date,"
        " array[ts::timestamp, '-infinity'], array[d::date, 'infinity']"
        " from (values {}) v(id, ts, tstz, d)"
    )
    rows = ", ".join(f"({i}, '{a}', '{b}', '{c}')" for i, a, b, c in EDGE_ROWS)
    await execute(
        settings,
        "set timezone = 'UTC'",
        f"create table {t} ({cols})",
        f"create table {snap} ({cols})",
        insert.format(snap, rows),
    )
    async with cdc_source(settings, tables=[t, snap], snapshot="initial") as src:
        await execute(settings, "set timezone = 'UTC'", insert.format(t, rows))
        await caught_up(settings, src)
        n = len(EDGE_ROWS)
        streamed = await read_events(settings.kafka.bootstrap, f"{src.name}.public.{t}", n)
        read = await read_events(settings.kafka.bootstrap, f"{src.name}.public.{snap}", n)
    # PostgreSQL's own count of microseconds (days for dates) since the epoch, from
    # whole days and the time of day (extract(epoch) rounds through a double up there)
    us = (
        "(({0})::date - date '1970-01-01')::numeric * 86400000000"
        " + extract(epoch from ({0})::time) * 1000000"
    )
    utc = "tstz at time zone 'UTC'"
    epochs = {
        i: (ts, tstz, d)
        for i, ts, tstz, d in await fetch(
            settings,
            f"select id, case when isfinite(ts) then {us.format('ts')} end,"
            f" case when isfinite(tstz) then {us.format(utc)} end,"
            f" case when isfinite(d) then d - date '1970-01-01' end from {t}",
        )
    }
    for events in (streamed, read):
        got = {int(e.partitionkey or 0): e.data["after"] for e in events}
        assert set(got) == set(EDGE_EXPECTED)
        for i, (ts, tstz, d) in EDGE_EXPECTED.items():
            after = got[i]
            assert (after["ts"], after["tstz"], after["d"]) == (ts, tstz, d), i
            assert after["tsa"] == [ts, "-infinity"] and after["da"] == [d, "infinity"]
            e_ts, e_tstz, e_d = epochs[i]
            if e_ts is not None:  # the text names the very instant PostgreSQL holds
                assert _epoch_us(ts) == e_ts and _epoch_us(tstz) == e_tstz
                assert _epoch_us(d) == e_d * 86_400_000_000


async def test_json_numbers_beyond_a_double_reach_a_pipeline(settings: Settings) -> None:
    """Downstream, a jq step reads such numbers as libjq does (clamped doubles) instead
    of the event being dead-lettered as unreadable."""
    t = unique("jpipe")
    await execute(settings, f"create table {t} (id int primary key, doc jsonb)")
    async with cdc_source(settings, tables=[t], snapshot="never") as src:
        topic = f"{src.name}.public.{t}"
        pipeline = {
            "name": src.name + "-p",
            "source": {"topics": [topic]},
            "steps": [{"jq": "{f: .after.doc.f, p: .after.doc.p, big: (.after.doc.f > 1e300)}"}],
            "sinks": [{"topic": {"topic": f"{topic}.out"}}],
        }
        await execute(settings, (f"insert into {t} values (1, %s)", (JSON_DOC,)))
        await caught_up(settings, src)
        async with running(with_pipelines(settings, pipeline)):
            [out] = await read_events(settings.kafka.bootstrap, f"{topic}.out", 1, timeout=60)
            dead = await read_records(settings.kafka.bootstrap, f"{src.name}-p.dlq", 0, 2)
    assert out.data == {"f": 1.7976931348623157e308, "p": 0.1, "big": True}
    assert dead == []
