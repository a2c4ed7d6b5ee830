"""Column values by type OID, from their PostgreSQL text output form."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from eventpipe.connectors.postgres_cdc import types as T
from eventpipe.connectors.postgres_cdc.types import TypeInfo, TypeRegistry

reg = TypeRegistry()


@pytest.mark.parametrize(
    "oid, raw, expected",
    [
        (21, b"-7", -7),
        (23, b"2147483647", 2147483647),
        (20, b"-9223372036854775808", -9223372036854775808),
        (26, b"16384", 16384),
        (700, b"1.5", 1.5),
        (701, b"-0.1", -0.1),
        (701, b"NaN", "NaN"),
        (701, b"-Infinity", "-Infinity"),
        (1700, b"12345678901234567890.123456789", "12345678901234567890.123456789"),
        (1700, b"NaN", "NaN"),
        (16, b"t", True),
        (16, b"f", False),
        (25, "grüße".encode(), "grüße"),
        (1043, b"abc", "abc"),
        (1042, b"ab ", "ab "),
        (2950, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (114, b'{"a": [1, 2.5, null]}', {"a": [1, 2.5, None]}),
        (3802, b'"text"', "text"),
        (17, b"\\x00ff10", base64.b64encode(b"\x00\xff\x10").decode()),
        (17, b"\\x", ""),
        (1082, b"2024-02-29", "2024-02-29"),
        (1083, b"13:14:15.5", "13:14:15.5"),
        (1266, b"13:14:15+02", "13:14:15+02"),
        (1186, b"P1Y2M3DT4H5M6.5S", "P1Y2M3DT4H5M6.5S"),
        (1184, b"2024-01-02 03:04:05.123456+00", "2024-01-02T03:04:05.123456Z"),
        (1184, b"2024-01-02 03:04:05+05:30", "2024-01-02T03:04:05+05:30"),
        (1184, b"2024-01-02 03:04:05-08", "2024-01-02T03:04:05-08:00"),
        (1184, b"infinity", "infinity"),
        (1184, b"0044-03-15 12:00:00+00 BC", "-0043-03-15T12:00:00Z"),
        (1184, b"0001-01-01 00:00:00+00 BC", "0000-01-01T00:00:00Z"),
        (1184, b"10000-01-01 00:00:00.5+00", "+10000-01-01T00:00:00.5Z"),
        (1184, b"0044-03-15 12:00:00+05:30 BC", "-0043-03-15T12:00:00+05:30"),
        (1184, b"-infinity", "-infinity"),
        (1114, b"0044-03-15 12:00:00 BC", "-0043-03-15T12:00:00Z"),
        (1114, b"294276-12-31 23:59:59.999999", "+294276-12-31T23:59:59.999999Z"),
        (1114, b"infinity", "infinity"),
        (1082, b"4713-01-01 BC", "-4712-01-01"),
        (1082, b"10000-01-01", "+10000-01-01"),
        (1082, b"0999-12-31", "0999-12-31"),
        (1082, b"infinity", "infinity"),
        (1114, b"2024-01-02 03:04:05.5", "2024-01-02T03:04:05.5Z"),
        (1114, b"-infinity", "-infinity"),
        (869, b"10.0.0.1/8", "10.0.0.1/8"),
        (790, b"$1,000.50", "$1,000.50"),
        (99999, b"(1,2)", "(1,2)"),  # unknown type: its text form
    ],
)
def test_scalar_conversions(oid: int, raw: bytes, expected: Any) -> None:
    assert reg.converter(oid)(raw) == expected


def test_numeric_as_number() -> None:
    num = TypeRegistry("number").converter(1700)
    assert num(b"42") == 42 and isinstance(num(b"42"), int)
    assert num(b"1.25") == 1.25
    assert num(b"99999999999999999999") == 1e20  # beyond 64 bits: a float, by choice
    assert num(b"NaN") == "NaN"
    assert TypeRegistry("string").converter(1700)(b"1.50") == "1.50"


@pytest.mark.parametrize(
    "raw, written",
    [
        (
            b'{"big": 123456789012345678901234567890, "n": 1}',
            b'{"big":123456789012345678901234567890,"n":1}',
        ),
        (
            b'{"p": 0.1000000000000000055511151231257827}',
            b'{"p":0.1000000000000000055511151231257827}',
        ),
        (b'{"f": 1e400, "g": [-1E-400]}', b'{"f":1e400,"g":[-1E-400]}'),
        (b"1e400", b"1e400"),
        (b"18446744073709551615", b"18446744073709551615"),  # the largest u64: an int
        (b"[0.30000000000000004, 1.50, 1E+2]", b"[0.30000000000000004,1.5,100.0]"),
        (
            b'{"id": "1234567890123456789012", "e": "1e400"}',
            b'{"id":"1234567890123456789012","e":"1e400"}',
        ),
    ],
)
def test_json_numbers_are_written_exactly(raw: bytes, written: bytes) -> None:
    v = reg.converter(3802)(raw)
    assert orjson.dumps(v) == written
    assert reg.converter(114)(raw) is not None


def test_json_numbers_a_double_holds_are_plain_numbers() -> None:
    v = reg.converter(3802)(b'{"a": 0.1, "b": 12345678901234567, "c": [1.5], "s": "x"}')
    assert v == {"a": 0.1, "b": 12345678901234567, "c": [1.5], "s": "x"}
    exact = reg.converter(3802)(b'{"p": 0.1000000000000000055511151231257827, "q": 2}')
    assert isinstance(exact["p"], orjson.Fragment) and exact["q"] == 2


def test_invalid_json_is_an_error() -> None:
    with pytest.raises(ValueError):
        reg.converter(3802)(b'{"a": NaN}')
    with pytest.raises(ValueError):
        reg.converter(3802)(b'{"a": 1e400')


@pytest.mark.parametrize(
    "oid, raw, expected",
    [
        (1007, b"{1,2,3}", [1, 2, 3]),
        (1007, b"{}", []),
        (1007, b"{{1,2},{3,NULL}}", [[1, 2], [3, None]]),
        (1007, b"[0:1]={7,8}", [7, 8]),
        (
            1009,
            b'{a,"b c","d\\"e","f\\\\g",NULL,"NULL",""}',
            ["a", "b c", 'd"e', "f\\g", None, "NULL", ""],
        ),
        (1185, b'{"2024-01-02 03:04:05+00"}', ["2024-01-02T03:04:05Z"]),
        (3807, b'{"{\\"a\\": 1}","[2]"}', [{"a": 1}, [2]]),
        (1231, b"{1.5,NaN}", ["1.5", "NaN"]),
        (1000, b"{t,f}", [True, False]),
        (1001, b'{"\\\\x01"}', [base64.b64encode(b"\x01").decode()]),
        (1020, b"{(1,1),(0,0);(2,2),(1,1)}", ["(1,1),(0,0)", "(2,2),(1,1)"]),
    ],
)
def test_arrays(oid: int, raw: bytes, expected: Any) -> None:
    assert reg.converter(oid)(raw) == expected


def test_malformed_array_is_an_error() -> None:
    with pytest.raises(ValueError):
        T.parse_array("1,2")


def test_user_types_from_catalog_info() -> None:
    r = TypeRegistry()
    r.add(TypeInfo(17001, "public", "mood", "e"))  # enum
    r.add(TypeInfo(17002, "public", "_mood", "b", element=17001, category="A"))
    r.add(TypeInfo(17003, "public", "posint", "d", base=23))  # domain over int4
    r.add(TypeInfo(17004, "public", "_posint", "b", element=17003, category="A"))
    r.add(TypeInfo(17005, "public", "pair", "c"))  # composite: text form
    assert r.converter(17001)(b"happy") == "happy"
    assert r.converter(17002)(b"{happy,sad}") == ["happy", "sad"]
    assert r.converter(17003)(b"5") == 5
    assert r.converter(17004)(b"{5,6}") == [5, 6]
    assert r.converter(17005)(b"(1,x)") == "(1,x)"
    assert r.unknown([23, 17001, 17999]) == {17999}
