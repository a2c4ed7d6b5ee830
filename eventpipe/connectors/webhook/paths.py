"""The fast path for the commonest mapping expressions: plain jq paths.

``.body.type``, ``.headers["x-github-event"]``, ``."a b".c``, optionally followed
by ``// <JSON literal>``, are evaluated here with dict lookups, with jq's
semantics (``null`` through missing keys and ``null``; an error on indexing
anything but an object or ``null``; ``//`` replacing ``null`` and ``false``).
Anything else is left to the jq engine (:mod:`eventpipe.transforms.jq_engine`);
the unit tests check both give the same results.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from eventpipe.transforms.errors import TransformError

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_STR = r'"(?:[^"\\]|\\.)*"'
_STEP = rf"(?:\.{_IDENT}|\.{_STR}|\.?\[{_STR}\])"
_PATH = re.compile(rf"^\s*(\.|(?:{_STEP})+)\s*(?://\s*(.+?))?\s*$")
_STEPS = re.compile(rf"\.({_IDENT})|\.({_STR})|\.?\[({_STR})\]")
_JQ_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
}


class PathExpr:
    __slots__ = ("default", "keys", "source")

    def __init__(self, source: str, keys: tuple[str, ...], default: Any) -> None:
        self.source = source
        self.keys = keys
        self.default = default

    def eval(self, value: Any) -> Any:
        for key in self.keys:
            if value is None:
                break
            if value.__class__ is dict:
                value = value.get(key)
            else:
                kind = _JQ_TYPES.get(type(value), type(value).__name__)
                raise TransformError(f'jq program failed: cannot index {kind} with "{key}"')
        if (value is None or value is False) and self.default is not _NONE:
            return self.default
        return value


_NONE = object()


def parse_path(source: str) -> PathExpr | None:
    """A :class:`PathExpr` when ``source`` is a plain path (with an optional
    ``// literal``), else ``None``."""
    m = _PATH.match(source)
    if m is None:
        return None
    path, literal = m.group(1), m.group(2)
    default: Any = _NONE
    if literal is not None:
        try:
            default = orjson.loads(literal)
        except orjson.JSONDecodeError:
            return None
        if not (default is None or isinstance(default, str | int | float | bool)):
            return None
    keys: list[str] = []
    if path != ".":
        pos = 0
        for step in _STEPS.finditer(path):
            if step.start() != pos:
                return None
            pos = step.end()
            ident, quoted, bracket = step.groups()
            if ident is not None:
                keys.append(ident)
            else:
                try:
                    key = orjson.loads(quoted or bracket)
                except orjson.JSONDecodeError:
                    return None
                if not isinstance(key, str):
                    return None
                keys.append(key)
        if pos != len(path):
            return None
    return PathExpr(source, tuple(keys), default)
