"""Column values -> JSON-friendly Python values, chosen by type OID.

pgoutput (text mode) and the snapshot queries both hand us each value in the
type's text output form, produced with the session settings the reader sets
(:data:`SESSION_SETTINGS`: UTC, ISO dates, ISO 8601 intervals, hex bytea, full
float precision).  A converter turns those bytes into what the event carries:

=====================  ==========================================================
int2/4/8, oid, xid     int
float4/8               float ("NaN" / "Infinity" / "-Infinity" stay strings)
numeric                string (default, exact) or number (``numeric: number``)
bool                   true / false
timestamptz            RFC 3339 in UTC, ``2024-01-02T03:04:05.123456Z``
timestamp              RFC 3339 read as UTC (as Debezium does), with ``Z``
date                   ``2024-02-29``
time / timetz          ISO 8601 text
interval               ISO 8601 duration, ``P1Y2M3DT4H5M6S``
bytea                  base64
json / jsonb           the JSON value, every number with PostgreSQL's digits
uuid, text, enums ...  string
arrays                 lists (nested for multi-dimensional), elements as above
domains                as their base type
=====================  ==========================================================

Dates and timestamps outside RFC 3339's years 0000-9999 are written as java.time
(``Instant.toString``, ``LocalDate.toString``) writes them, the ISO 8601 expanded
form with astronomical year numbering: 44 BC is ``-0043-03-15T12:00:00Z`` (1 BC is
year ``0000``), year 10000 is ``+10000-01-01T00:00:00Z``; ``infinity`` and
``-infinity`` stay those strings.

A json / jsonb number that a double holds exactly enough to print back the same
value (``0.1``, ``1.5``, integers within 64 bits) is a Python number; any other
(``0.1000000000000000055511151231257827``, ``1e400``, 30-digit integers) is an
``orjson.Fragment`` of PostgreSQL's text for it, written verbatim into the event.

Types the table does not know (user types) are looked up once in ``pg_type``
(:meth:`TypeRegistry.resolve`); what is still unknown after that (composites,
ranges, extension types) is passed on as its text form.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import orjson

Converter = Callable[[bytes], Any]
NumericMode = Literal["string", "number"]

SESSION_SETTINGS: dict[str, str] = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}

_FLOAT_SPECIALS = frozenset({b"NaN", b"Infinity", b"-Infinity"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Where a number may not survive a double: 16+ digits (a '.' may sit among them) or a
# three-digit exponent.  Anything shorter round-trips (DBL_DIG is 15); a string that
# looks like one only costs the exact parse.  Bytes are mapped to classes (d digit or
# '.', e exponent, s sign) and the patterns found with ``in`` (regex was 4x slower).
_NUMBER_CLASSES = bytes(
    ord("d") if c in b"0123456789." else ord("e") if c in b"eE" else ord("s") if c in b"+-" else 32
    for c in range(256)
)
_DIGITS16 = b"d" * 16
_JSON_INT_MIN, _JSON_INT_MAX = -(2**63), 2**64 - 1  # what orjson reads and writes as int
_INFINITIES = frozenset({"infinity", "-infinity"})
_OFFSET = re.compile(r"([+-])(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?$")


def text(raw: bytes) -> str:
    return raw.decode("utf-8")


def boolean(raw: bytes) -> bool:
    return raw == b"t"


def floating(raw: bytes) -> float | str:
    if raw in _FLOAT_SPECIALS:
        return raw.decode()
    return float(raw)


def numeric_string(raw: bytes) -> str:
    return raw.decode("ascii")


def numeric_number(raw: bytes) -> int | float | str:
    """Exact as an int when it is integral and fits 64 bits, else a float (lossy by choice)."""
    if raw in _FLOAT_SPECIALS:
        return raw.decode()
    if b"." not in raw:
        v = int(raw)
        if _INT64_MIN <= v <= _INT64_MAX:
            return v
    return float(raw)


def _rfc3339_offset(s: str) -> str:
    """``... +05:30`` / ``-08`` -> ``+05:30`` / ``-08:00`` (seconds offsets are kept)."""
    m = _OFFSET.search(s)
    if m is None:
        return s
    sign, hh, mm, ss = m.groups()
    off = f"{sign}{hh}:{mm or '00'}" + (f":{ss}" if ss else "")
    if off in ("+00:00", "-00:00"):
        off = "Z"
    return s[: m.start()].rstrip() + off


def _expanded_year(s: str) -> str:
    """PostgreSQL's ``YYYY-MM-DD...`` with an optional `` BC`` -> ISO 8601 with
    astronomical years: four digits for 0000-9999, else a sign (``-0043``, ``+10000``)."""
    bc = s.endswith(" BC")
    if bc:
        s = s[:-3]
    cut = s.index("-")
    year = int(s[:cut])
    if bc:
        year = 1 - year
    if year > 9999:
        text = f"+{year}"
    elif year < 0:
        text = f"-{-year:04d}"
    else:
        text = f"{year:04d}"
    return text + s[cut:]


def date(raw: bytes) -> str:
    s = raw.decode("ascii")
    if len(s) == 10 or s in _INFINITIES:  # YYYY-MM-DD, the common case
        return s
    return _expanded_year(s)


def timestamptz(raw: bytes) -> str:
    s = raw.decode("ascii")
    if s[4:5] != "-" or s.endswith(" BC"):
        if s in _INFINITIES:
            return s
        s = _expanded_year(s)
    if s.endswith("+00"):  # the common case: the reader's session runs in UTC
        return s[:-3].replace(" ", "T", 1) + "Z"
    return _rfc3339_offset(s.replace(" ", "T", 1))


def timestamp(raw: bytes) -> str:
    s = raw.decode("ascii")
    if s[4:5] != "-" or s.endswith(" BC"):
        if s in _INFINITIES:
            return s
        s = _expanded_year(s)
    return s.replace(" ", "T", 1) + "Z"


def bytea(raw: bytes) -> str:
    # hex output: \x0102...
    if raw[:2] == b"\\x":
        return binascii.b2a_base64(binascii.unhexlify(raw[2:]), newline=False).decode("ascii")
    raise ValueError("bytea value is not in hex output form (bytea_output must be 'hex')")


def _exact_float(s: str) -> float | orjson.Fragment:
    f = float(s)
    if math.isfinite(f) and Decimal(repr(f)) == Decimal(s):
        return f
    return orjson.Fragment(s)


def _exact_int(s: str) -> int | orjson.Fragment:
    if len(s) <= 20:
        v = int(s)
        if _JSON_INT_MIN <= v <= _JSON_INT_MAX:
            return v
    return orjson.Fragment(s)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_value(raw: bytes) -> Any:
    """The JSON value, every number exact: one a double cannot print back as the same
    number stays PostgreSQL's text (an ``orjson.Fragment``, written verbatim)."""
    classes = raw.translate(_NUMBER_CLASSES)
    if _DIGITS16 not in classes and b"deddd" not in classes and b"desddd" not in classes:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the exact parse below says what is wrong, or takes it
    return json.loads(
        raw, parse_float=_exact_float, parse_int=_exact_int, parse_constant=_no_constant
    )


# ------------------------------------------------------------------- arrays
def parse_array(s: str, delim: str = ",") -> list[Any]:
    """PostgreSQL's array text form -> nested lists of element strings (``None`` for
    NULL).  Handles quoting, backslash escapes, nesting and ``[1:2]={...}`` bounds."""
    if s.startswith("["):
        eq = s.find("=")
        if eq < 0:
            raise ValueError(f"malformed array literal: {s[:40]!r}")
        s = s[eq + 1 :]
    n = len(s)
    if n < 2 or s[0] != "{":
        raise ValueError(f"malformed array literal: {s[:40]!r}")
    stack: list[list[Any]] = []
    root: list[Any] | None = None
    i = 0
    while i < n:
        c = s[i]
        if c == "{":
            new: list[Any] = []
            if stack:
                stack[-1].append(new)
            else:
                root = new
            stack.append(new)
            i += 1
        elif c == "}":
            stack.pop()
            i += 1
        elif c == delim or c.isspace():
            i += 1
        elif c == '"':
            i += 1
            buf: list[str] = []
            while i < n:
                c = s[i]
                if c == "\\":
                    buf.append(s[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    buf.append(c)
                    i += 1
            stack[-1].append("".join(buf))
        else:
            start = i
            while i < n and s[i] not in (delim, "}"):
                i += 1
            item = s[start:i].strip()
            stack[-1].append(None if item.upper() == "NULL" else item)
    if root is None or stack:
        raise ValueError(f"malformed array literal: {s[:40]!r}")
    return root


def array_of(element: Converter, delim: str = ",") -> Converter:
    def convert_items(items: list[Any]) -> list[Any]:
        return [
            None
            if v is None
            else convert_items(v)
            if isinstance(v, list)
            else element(v.encode("utf-8"))
            for v in items
        ]

    def convert(raw: bytes) -> list[Any]:
        return convert_items(parse_array(raw.decode("utf-8"), delim))

    return convert


# --------------------------------------------------------------- the table
_INTS = (20, 21, 23, 26, 28, 29, 5069)  # int8 int2 int4 oid xid cid xid8
_FLOATS = (700, 701)
_BUILTIN: dict[int, Converter] = {
    16: boolean,
    17: bytea,
    114: json_value,
    3802: json_value,
    1082: date,
    1083: text,  # time
    1266: text,  # timetz
    1186: text,  # interval (iso_8601 style)
    1114: timestamp,
    1184: timestamptz,
    2950: text,  # uuid
}
for _oid in _INTS:
    _BUILTIN[_oid] = int
for _oid in _FLOATS:
    _BUILTIN[_oid] = floating

# array oid -> (element oid, delimiter)
_BUILTIN_ARRAYS: dict[int, tuple[int, str]] = {
    1000: (16, ","),
    1001: (17, ","),
    1005: (21, ","),
    1007: (23, ","),
    1016: (20, ","),
    1028: (26, ","),
    1021: (700, ","),
    1022: (701, ","),
    1231: (1700, ","),
    1009: (25, ","),
    1015: (1043, ","),
    1014: (1042, ","),
    1002: (18, ","),
    1003: (19, ","),
    1115: (1114, ","),
    1185: (1184, ","),
    1182: (1082, ","),
    1183: (1083, ","),
    1270: (1266, ","),
    1187: (1186, ","),
    2951: (2950, ","),
    199: (114, ","),
    3807: (3802, ","),
    1041: (869, ","),
    651: (650, ","),
    1040: (829, ","),
    1020: (603, ";"),  # box uses ';'
}
# Built-in scalar types below FirstNormalObjectId that are plain text.
_TEXTUAL_BUILTINS = frozenset(
    {18, 19, 25, 142, 650, 829, 774, 869, 1042, 1043, 1560, 1562, 790, 3220, 3614, 3615}
)


@dataclass(frozen=True, slots=True)
class TypeInfo:
    oid: int
    namespace: str
    name: str
    kind: str  # pg_type.typtype: b base, e enum, d domain, c composite, r range, ...
    base: int = 0  # domains
    element: int = 0  # arrays
    delim: str = ","
    category: str = ""


class TypeRegistry:
    """OID -> converter, for the built-ins and the user types seen so far."""

    def __init__(self, numeric: NumericMode = "string") -> None:
        self.numeric: NumericMode = numeric
        self._numeric = numeric_number if numeric == "number" else numeric_string
        self._cache: dict[int, Converter] = {}
        self._info: dict[int, TypeInfo] = {}

    def known(self, oid: int) -> bool:
        return oid in self._cache or self._builtin(oid) is not None

    def _builtin(self, oid: int) -> Converter | None:
        if oid == 1700:
            return self._numeric
        conv = _BUILTIN.get(oid)
        if conv is not None:
            return conv
        arr = _BUILTIN_ARRAYS.get(oid)
        if arr is not None:
            elem = self._builtin(arr[0]) or text
            return array_of(elem, arr[1])
        if oid in _TEXTUAL_BUILTINS:
            return text
        return None

    def converter(self, oid: int) -> Converter:
        """The converter for ``oid``; text when the type is unknown (call
        :meth:`resolve` first for user types)."""
        conv = self._cache.get(oid)
        if conv is not None:
            return conv
        conv = self._builtin(oid)
        if conv is None:
            info = self._info.get(oid)
            conv = self._from_info(info) if info is not None else text
        self._cache[oid] = conv
        return conv

    def _from_info(self, info: TypeInfo) -> Converter:
        if info.kind == "d" and info.base:
            return self.converter(info.base)
        if info.category == "A" and info.element:
            return array_of(self.converter(info.element), info.delim)
        return text  # enums, composites, ranges, extension types: their text form

    def unknown(self, oids: Iterable[int]) -> set[int]:
        return {
            o for o in oids if o not in self._cache and o not in self._info and not self.known(o)
        }

    def add(self, info: TypeInfo) -> None:
        self._info[info.oid] = info
        self._cache.pop(info.oid, None)

    def describe(self, oid: int) -> TypeInfo | None:
        return self._info.get(oid)

    async def resolve(self, conn: Any, oids: Iterable[int]) -> None:
        """Look up user types (and what they are built on) in ``pg_type``."""
        todo = self.unknown(oids)
        while todo:
            cur = await conn.execute(
                "select t.oid::int, n.nspname, t.typname, t.typtype::text, t.typbasetype::int,"
                " t.typelem::int, coalesce(e.typdelim, t.typdelim)::text, t.typcategory::text"
                " from pg_type t join pg_namespace n on n.oid = t.typnamespace"
                " left join pg_type e on e.oid = t.typelem"
                " where t.oid = any(%s)",
                (list(todo),),
            )
            found = set()
            nxt: set[int] = set()
            for oid, nsp, name, kind, base, elem, delim, cat in await cur.fetchall():
                self.add(TypeInfo(oid, nsp, name, kind, base, elem, delim, cat))
                found.add(oid)
                for dep in (base, elem):
                    if dep:
                        nxt.add(dep)
            for missing in todo - found:  # dropped meanwhile: text
                self.add(TypeInfo(missing, "", "", "b"))
            todo = self.unknown(nxt)
