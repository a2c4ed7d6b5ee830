"""A config model as the reference shows it: one row per key a YAML file can hold.

:func:`describe` walks a pydantic model's fields: the key as YAML spells it (the
alias: ``validate``, ``schema``), its type in plain words with its bounds, its
default (or *required*), and its description.  A nested model's keys follow its
own row with a dotted path (``read.topics``; ``topics[].name`` for a list of
them); a model documented elsewhere (another plugin's config) is linked instead;
the members of a tagged union (a webhook's ``verify``) become forms of their
own, one table each.  A key without a description is recorded in
:attr:`ModelDoc.undocumented`: tests/unit/test_reference.py wants none.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from eventpipe.durations import parse_duration
from eventpipe.topics import check_topic

Links = Mapping[type[BaseModel], tuple[str, str]]
"""Models documented elsewhere -> (their label, their anchor)."""


@dataclass(frozen=True)
class Key:
    path: str
    type: str
    default: str
    description: str


@dataclass
class Form:
    """One member of a tagged union: a table of its own."""

    title: str
    keys: list[Key]


@dataclass
class ModelDoc:
    keys: list[Key] = field(default_factory=list)
    forms: list[Form] = field(default_factory=list)
    undocumented: list[str] = field(default_factory=list)


def yaml_key(name: str, info: FieldInfo) -> str:
    return info.alias or name


def describe(model: type[BaseModel], links: Links, prefix: str = "") -> ModelDoc:
    """Every key of ``model`` (paths under ``prefix``), nested ones included."""
    doc = ModelDoc()
    for name, info in model.model_fields.items():
        path = prefix + yaml_key(name, info)
        description = " ".join((info.description or "").split())
        if not description:
            doc.undocumented.append(path)
        inner, many = inner_model(info.annotation)
        members = _union_models(info.annotation)
        if inner is not None and inner in links:
            label, anchor = links[inner]
            kind = f"object: the keys of [{label}](#{anchor})"
            doc.keys.append(Key(path, _list_of(kind, many), _default(info), description))
        elif inner is not None:
            doc.keys.append(Key(path, _list_of("object", many), _default(info), description))
            _merge(doc, describe(inner, links, path + ("[]." if many else ".")))
        elif members:
            tag = info.discriminator if isinstance(info.discriminator, str) else None
            by = f" (by `{tag}`)" if tag else ""
            kind = f"object: one of the forms below{by}"
            doc.keys.append(Key(path, kind, _default(info), description))
            for member in members:
                sub = describe(member, links, path + ".")
                title = f"`{path}` with `{tag}: {_tag_value(member, tag)}`" if tag else path
                doc.forms.append(Form(title, sub.keys))
                doc.forms.extend(sub.forms)
                doc.undocumented.extend(sub.undocumented)
        else:
            doc.keys.append(field_key(path, info))
    return doc


def field_key(path: str, info: FieldInfo) -> Key:
    """The row of a field that holds no model."""
    description = " ".join((info.description or "").split())
    return Key(path, words(info.annotation, info.metadata), _default(info), description)


def _merge(into: ModelDoc, sub: ModelDoc) -> None:
    into.keys.extend(sub.keys)
    into.forms.extend(sub.forms)
    into.undocumented.extend(sub.undocumented)


def _list_of(kind: str, many: bool) -> str:
    return f"list of {kind.replace('object', 'objects', 1)}" if many else kind


# ------------------------------------------------------------------- types
_PLAIN: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    SecretStr: "string (secret: never shown)",
    Any: "string or mapping",
}
_VALIDATORS: dict[Callable[..., Any], str] = {
    parse_duration: "duration",
    check_topic: "topic name",
}
_PLURALS = {"string": "strings", "integer": "integers", "number": "numbers", "path": "paths"}
_PLURALS |= {"list": "lists", "mapping": "mappings", "topic name": "topic names"}
_PLURALS |= {"duration": "durations", "string or mapping": "mappings"}


def words(tp: Any, metadata: list[Any] | tuple[Any, ...] = ()) -> str:
    """``tp`` in plain words, with the bounds ``metadata`` (pydantic's) sets."""
    tp, found = _unwrap(tp)
    meta = [*metadata, *found]
    named = next((_VALIDATORS[f] for f in _funcs(meta) if f in _VALIDATORS), None)
    return (named or _words(tp)) + _bounds(meta, get_origin(tp) or tp)


def _words(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if tp in _PLAIN:
        return _PLAIN[tp]
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "path"
    if origin is Literal:
        values = ", ".join(f"`{_scalar(a)}`" for a in args)
        return values if len(args) == 1 else "one of " + values
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return " or ".join(_member(a) for a in members)
    if origin in (list, tuple, set, frozenset) and args:
        return f"list of {_plural(words(args[0]))}"
    if isinstance(origin, type) and issubclass(origin, Mapping) and len(args) == 2:
        return f"mapping of {words(args[0])} to {_plural(words(args[1]))}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "object"
    return getattr(tp, "__name__", str(tp))


def _member(tp: Any) -> str:
    """A member of a union: a literal reads as its values (``integer or `latest```)."""
    if get_origin(tp) is Literal:
        return " or ".join(f"`{_scalar(a)}`" for a in get_args(tp))
    return words(tp)


def _plural(kind: str) -> str:
    if kind.startswith("one of "):
        return "values, each " + kind
    for one, many in sorted(_PLURALS.items(), key=lambda kv: -len(kv[0])):
        if kind == one or kind.startswith(one + " "):
            return many + kind[len(one) :]
    return kind


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, ...]`` -> X and its metadata; ``X | None`` -> X."""
    meta: list[Any] = []
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp, *extra = get_args(tp)
            for m in extra:
                meta.extend(getattr(m, "metadata", None) or [m])
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp, meta
            tp = members[0]
        else:
            return tp, meta


def _funcs(meta: list[Any]) -> list[Callable[..., Any]]:
    return [m.func for m in meta if callable(getattr(m, "func", None))]


def _bounds(meta: list[Any], tp: Any) -> str:
    unit = "characters" if tp is str else "entries" if tp is dict else "items"
    parts: list[str] = []
    for m in meta:
        if isinstance(m, at.Ge):
            parts.append(f">= {m.ge}")
        elif isinstance(m, at.Gt):
            parts.append(f"> {m.gt}")
        elif isinstance(m, at.Le):
            parts.append(f"<= {m.le}")
        elif isinstance(m, at.Lt):
            parts.append(f"< {m.lt}")
        elif isinstance(m, at.MinLen) and m.min_length:
            one = m.min_length == 1
            parts.append("not empty" if one else f"at least {m.min_length} {unit}")
        elif isinstance(m, at.MaxLen):
            parts.append(f"at most {m.max_length} {unit}")
    return f", {', '.join(parts)}" if parts else ""


def inner_model(tp: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (or a list of), and whether it is a list."""
    tp, _ = _unwrap(tp)
    many = get_origin(tp) is list
    if many:
        tp, _ = _unwrap(get_args(tp)[0])
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp, many
    return None, False


def _union_models(tp: Any) -> list[type[BaseModel]]:
    tp, _ = _unwrap(tp)
    if get_origin(tp) not in (Union, types.UnionType):
        return []
    members = [a for a in get_args(tp) if a is not type(None)]
    if all(isinstance(a, type) and issubclass(a, BaseModel) for a in members):
        return members
    return []


def _tag_value(model: type[BaseModel], tag: str) -> str:
    ann = model.model_fields[tag].annotation
    return ", ".join(str(a) for a in get_args(ann))


# ---------------------------------------------------------------- defaults
def default_value(info: FieldInfo) -> Any:
    """The default as a config file would write it (secrets and paths as text)."""
    factory = info.default_factory
    value = factory() if factory is not None else info.default  # type: ignore[call-arg]
    return plain(value)


def plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, BaseModel):
        return defaults(type(value))
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Every key of ``model`` with its default (a section written out in full)."""
    return {
        yaml_key(name, info): default_value(info)
        for name, info in model.model_fields.items()
        if not info.is_required()
    }


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = default_value(info)
    if value is None:
        return "not set"
    if parse_duration in _funcs(list(info.metadata)) and isinstance(value, int | float):
        return f"`{duration_text(value)}`"
    inner, many = inner_model(info.annotation)
    if inner is not None and not many:
        return ""  # its keys follow, each with its default
    return f"`{_scalar(value)}`"


_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))


def duration_text(seconds: float) -> str:
    """``900.0`` -> ``15m``, ``0.2`` -> ``200ms``: a duration as a config file writes it."""
    for unit, size in _UNITS:
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def _scalar(value: Any) -> str:
    text: str = yaml.safe_dump(value, default_flow_style=True, width=1 << 16)
    return text.removesuffix("\n").removesuffix("\n...").strip()


__all__ = [
    "Form",
    "Key",
    "Links",
    "ModelDoc",
    "default_value",
    "defaults",
    "describe",
    "field_key",
    "inner_model",
    "plain",
    "words",
]
