"""Avro validation of JSON data, compiled once per schema.

The schema is parsed by ``fastavro.parse_schema`` (so malformed schemas fail
exactly as fastavro says) and then compiled into nested closures: the per-event
check is a few ``isinstance`` calls per field instead of fastavro.validation's
walk over the schema dicts (which measured 12-16 us for a 10-field record,
against ~2 us here).  The rules are fastavro.validation's (non-strict: a
missing field is its default, else null); ``test_transforms_validate.py``
checks that both agree.  Only when a datum is invalid does :meth:`violations`
walk it again to say where and why.
"""

from __future__ import annotations

import array
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import fastavro

from .errors import Violation
from .event_form import json_type

Check = Callable[[Any], bool]

_NO_VALUE: Final = object()
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_RECORD_TYPES = ("record", "error", "request")
_NAMED_TYPES = (*_RECORD_TYPES, "enum", "fixed")
_PRIMITIVES = ("null", "boolean", "string", "bytes", "int", "long", "float", "double")


def _is_int(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and _INT_MIN <= d <= _INT_MAX


def _is_long(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and _LONG_MIN <= d <= _LONG_MAX


def _is_number(d: Any) -> bool:
    return isinstance(d, int | float) and not isinstance(d, bool)


def _is_iso_date(d: Any) -> bool:
    try:
        datetime.date.fromisoformat(d)
    except ValueError:
        return False
    return True


_PRIMITIVE_CHECKS: Final[dict[str, Check]] = {
    "null": lambda d: d is None,
    "boolean": lambda d: isinstance(d, bool),
    "string": lambda d: isinstance(d, str),
    "bytes": lambda d: isinstance(d, bytes | bytearray),
    "int": _is_int,
    "long": _is_long,
    "float": _is_number,
    "double": _is_number,
}


class AvroSchemaError(ValueError):
    """The schema is not valid Avro."""


class AvroChecker:
    def __init__(self, schema: Any) -> None:
        named: dict[str, Any] = {}
        try:
            self.parsed = fastavro.parse_schema(schema, named_schemas=named)
        except Exception as exc:  # fastavro raises several unrelated classes
            raise AvroSchemaError(f"invalid Avro schema: {type(exc).__name__}: {exc}") from exc
        self._named = named
        self._compiled: dict[str, Check] = {}
        self.is_valid: Check = self._compile(self.parsed)

    # ------------------------------------------------------------ compile
    def _compile(self, s: Any, *, inline: bool = False) -> Check:
        if isinstance(s, str):
            if s in _PRIMITIVE_CHECKS:
                return _PRIMITIVE_CHECKS[s]
            return self._ref(s)
        if isinstance(s, list):
            return self._union([self._compile(b) for b in s])
        t = s["type"]
        if t in _NAMED_TYPES and not inline:
            return self._ref(s["name"])
        if s.get("logicalType") == "date" and t == "int":
            return lambda d: _is_int(d) or (isinstance(d, str) and _is_iso_date(d))
        if t in _PRIMITIVE_CHECKS:
            return _PRIMITIVE_CHECKS[t]
        if t in _RECORD_TYPES:
            return self._record(s)
        if t == "enum":
            symbols = frozenset(s["symbols"])
            return lambda d: isinstance(d, str) and d in symbols
        if t == "fixed":
            size = s["size"]
            return lambda d: isinstance(d, bytes) and len(d) == size
        if t == "array":
            item = self._compile(s["items"])
            return lambda d: (
                isinstance(d, list | tuple | Sequence | array.array)
                and not isinstance(d, str)
                and all(item(x) for x in d)
            )
        if t == "map":
            value = self._compile(s["values"])
            return lambda d: (
                isinstance(d, Mapping)
                and all(isinstance(k, str) for k in d)
                and all(value(v) for v in d.values())
            )
        if isinstance(t, list | dict) or t in self._named:
            return self._compile(t)
        raise AvroSchemaError(f"unknown Avro type {t!r}")  # pragma: no cover

    def _ref(self, name: str) -> Check:
        done = self._compiled.get(name)
        if done is not None:
            return done
        cell: list[Check] = []

        def ref(d: Any) -> bool:  # indirection: named types may be recursive
            return cell[0](d)

        self._compiled[name] = ref
        check = self._compile(self._named[name], inline=True)
        cell.append(check)
        self._compiled[name] = check
        return check

    @staticmethod
    def _union(branches: list[Check]) -> Check:
        null = _PRIMITIVE_CHECKS["null"]
        if len(branches) == 2 and branches[0] is null:
            other = branches[1]
            return lambda d: d is None or other(d)
        return lambda d: any(b(d) for b in branches)

    def _record(self, s: Any) -> Check:
        fullname = s["name"]
        fields = [
            (f["name"], f.get("default", _NO_VALUE), self._compile(f["type"])) for f in s["fields"]
        ]

        def check(d: Any) -> bool:
            if type(d) is not dict and not isinstance(d, Mapping):
                return False
            if "-type" in d and d["-type"] != fullname:
                return False
            for name, default, field in fields:
                v = d.get(name, default)
                if not field(None if v is _NO_VALUE else v):
                    return False
            return True

        return check

    # ----------------------------------------------------------- explain
    def violations(self, datum: Any, limit: int = 10) -> list[Violation]:
        """Why ``datum`` is invalid: JSONPath, the Avro type that failed, and what was found."""
        out: list[Violation] = []
        self._explain(self.parsed, datum, "$", out, limit)
        if not out:  # pragma: no cover - is_valid and _explain agree by construction
            out.append(Violation("$", "schema", "does not match the Avro schema"))
        return out

    def _explain(self, s: Any, d: Any, path: str, out: list[Violation], limit: int) -> None:
        if len(out) >= limit or self._check_of(s)(d):
            return
        if isinstance(s, str) and s in self._named:
            s = self._named[s]
        if isinstance(s, dict) and isinstance(s.get("type"), str) and s["type"] in self._named:
            s = self._named[s["type"]]
        if isinstance(s, list):
            others = [b for b in s if b != "null"]
            if d is not None and len(others) == 1:  # a nullable X: say what is wrong inside X
                self._explain(others[0], d, path, out, limit)
                return
        t = s if isinstance(s, str | list) else s["type"]
        if isinstance(t, str) and t in _RECORD_TYPES and isinstance(d, Mapping):
            for f in s["fields"]:
                v = d.get(f["name"], f.get("default", _NO_VALUE))
                v = None if v is _NO_VALUE else v
                self._explain(f["type"], v, _child(path, f["name"]), out, limit)
            if not out and "-type" in d:
                out.append(Violation(path, "record", f"-type is {d['-type']!r}, not {s['name']!r}"))
            return
        if t == "array" and isinstance(d, list | tuple):
            for n, item in enumerate(d):
                self._explain(s["items"], item, f"{path}[{n}]", out, limit)
            return
        if t == "map" and isinstance(d, Mapping) and all(isinstance(k, str) for k in d):
            for k, v in d.items():
                self._explain(s["values"], v, _child(path, k), out, limit)
            return
        out.append(Violation(path, _type_name(s), _found(s, d)))

    def _check_of(self, s: Any) -> Check:
        if isinstance(s, str) and s in self._compiled:
            return self._compiled[s]
        return self._compile(s)


def _type_name(s: Any) -> str:
    if isinstance(s, str):
        return s
    if isinstance(s, list):
        return "union[" + ", ".join(_type_name(b) for b in s) + "]"
    t = s["type"]
    if t in _NAMED_TYPES:
        return f"{t} {s['name']}"
    logical = s.get("logicalType")
    return f"{t} ({logical})" if logical else _type_name(t)


def _found(s: Any, d: Any) -> str:
    if isinstance(s, dict) and s.get("type") == "enum" and isinstance(d, str):
        return f"{d!r} is not one of {s['symbols']}"
    if s in ("int", "long") and isinstance(d, int) and not isinstance(d, bool):
        return f"{d} is out of range for {s}"
    shown = repr(d)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"expected {_type_name(s)}, got {json_type(d)} {shown}"


def _child(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{path}['{escaped}']"
