"""What a config error says about a name the config does not know.

A misspelt key is the commonest config mistake, and pydantic's "Extra inputs are
not permitted" names neither the keys that place allows nor the one meant.
:func:`error_message` does: it finds the model at the error's location by
walking the typed fields along pydantic's ``loc`` (nested models, lists, dicts,
optional and tagged-union members), then lists that model's keys as YAML spells
them (aliases) and the closest one::

    unknown key; did you mean 'columns'? (allowed: table, columns, mode, key, ...)

The same "did you mean" goes on an unknown tag of a tagged union, a value not in
a ``Literal`` and an unknown source, step or sink type (:func:`did_you_mean`).
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to ``word``, else ``""``."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else ""


def model_keys(model: type[BaseModel]) -> list[str]:
    """The keys ``model`` accepts, as a config file spells them (aliases)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model that validates the mapping at ``loc`` under ``model`` (None when
    the path leads through something untyped)."""
    tp: Any = model
    for part in loc:
        tp = _descend(tp, part)
        if tp is None:
            return None
    return _model(tp)


def error_message(
    err: ErrorDetails, model: type[BaseModel] | None = None, also: Sequence[str] = ()
) -> str:
    """The message for one pydantic error; ``also`` are keys the caller takes off
    the top level of the mapping before validating it (a sink's ``name``)."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        loc = tuple(err["loc"])
        where = model_at(model, loc[:-1]) if model is not None else None
        if where is None:
            return "unknown key (check the spelling)"
        keys = [k for k in also if len(loc) == 1] + model_keys(where)
        return f"unknown key{did_you_mean(str(loc[-1]), keys)} (allowed: {', '.join(keys)})"
    if kind == "union_tag_invalid":
        tags = _QUOTED.findall(str(ctx.get("expected_tags", "")))
        key = str(ctx.get("discriminator", "")).strip("'")
        tag = str(ctx.get("tag", ""))
        return f"unknown {key} {tag!r}{did_you_mean(tag, tags)} (allowed: {', '.join(tags)})"
    msg = str(err["msg"])
    if kind == "literal_error" and isinstance(err.get("input"), str):
        msg += did_you_mean(str(err["input"]), _QUOTED.findall(str(ctx.get("expected", ""))))
    return msg


# ---------------------------------------------------------------- the walk
def _strip(tp: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _model(tp: Any) -> type[BaseModel] | None:
    tp = _strip(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _descend(tp: Any, part: str | int) -> Any:
    """The type one ``loc`` step below ``tp``."""
    tp = _strip(tp)
    origin = get_origin(tp)
    args = get_args(tp)
    model = _model(tp)
    if model is not None:
        for name, field in model.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    if origin in (Union, types.UnionType):
        # pydantic names the member in the loc: its tag, or its class name.
        for member in args:
            m = _model(member)
            if m is not None and (part == m.__name__ or part in _tags(m)):
                return m
        return None
    if origin is tuple and isinstance(part, int) and Ellipsis not in args:
        return args[part] if part < len(args) else None
    if origin in (list, tuple, set, frozenset) and isinstance(part, int) and args:
        return args[0]
    if isinstance(origin, type) and issubclass(origin, Mapping) and len(args) == 2:
        return args[1]
    return None


def _tags(model: type[BaseModel]) -> set[Any]:
    """The values of the model's ``Literal`` fields (a tagged union's tags)."""
    out: set[Any] = set()
    for field in model.model_fields.values():
        ann = _strip(field.annotation)
        if get_origin(ann) is Literal:
            out.update(get_args(ann))
    return out
