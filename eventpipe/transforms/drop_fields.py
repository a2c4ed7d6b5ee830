"""The ``drop_fields`` step: delete paths from each event's data.

An example is ``PLUGIN``'s ``example`` (shown in docs/reference.md#step-drop-fields
with every key, and loaded by tests/unit/test_reference.py).

A path is keys separated by ``.`` (a leading ``.`` is allowed), with ``[]`` for
every element of an array and ``[N]`` for one.  Missing paths are ignored.  The
input is not mutated: containers along a dropped path are copied, the rest of
the data is shared with the input.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Final

from pydantic import Field, field_validator

from eventpipe.envelope import CloudEvent
from eventpipe.errors import ConfigError
from eventpipe.plugin import PluginConfig

from .base import StepContext, TransformStep
from .event_form import with_data

_SEGMENT = re.compile(r"^([^.\[\]]+)((?:\[\d*\])*)$")
_INDEX = re.compile(r"\[(\d*)\]")
_EACH: Final = object()  # `[]`: every element of an array

PathPart = str | int | object


def parse_path(path: str) -> list[PathPart]:
    """``a.b``, ``.a.b``, ``items[].sku``, ``items[0]`` -> keys, indexes and EACH."""
    text = path[1:] if path.startswith(".") else path
    if not text:
        raise ValueError("is empty")
    parts: list[PathPart] = []
    for seg in text.split("."):
        m = _SEGMENT.match(seg)
        if not m:
            raise ValueError(
                f"{path!r} is not a path: use keys separated by '.', with [] for every "
                "element of an array or [N] for one (e.g. items[].sku)"
            )
        parts.append(m.group(1))
        for idx in _INDEX.findall(m.group(2)):
            parts.append(_EACH if idx == "" else int(idx))
    return parts


_UNCHANGED: Final = object()


def _drop(node: Any, path: list[PathPart], i: int) -> Any:
    """``node`` without ``path[i:]``: a copy along the path, or _UNCHANGED."""
    part = path[i]
    last = i == len(path) - 1
    if part is _EACH:
        if not isinstance(node, list):
            return _UNCHANGED
        if last:
            return [] if node else _UNCHANGED
        new_list: list[Any] | None = None
        for n, item in enumerate(node):
            r = _drop(item, path, i + 1)
            if r is not _UNCHANGED:
                if new_list is None:
                    new_list = list(node)
                new_list[n] = r
        return _UNCHANGED if new_list is None else new_list
    if isinstance(part, int):
        if not isinstance(node, list) or part >= len(node):
            return _UNCHANGED
        if last:
            return node[:part] + node[part + 1 :]
        r = _drop(node[part], path, i + 1)
        if r is _UNCHANGED:
            return r
        new = list(node)
        new[part] = r
        return new
    if not isinstance(node, dict) or part not in node:
        return _UNCHANGED
    if last:
        return {k: v for k, v in node.items() if k != part}
    r = _drop(node[part], path, i + 1)
    if r is _UNCHANGED:
        return r
    copy = dict(node)
    copy[part] = r
    return copy


class DropFieldsConfig(PluginConfig):
    paths: list[str] = Field(
        min_length=1, description="paths in data: a.b, items[] (every element), items[0]"
    )

    @field_validator("paths", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class DropFieldsStep(TransformStep):
    """Deletes paths from ``data``; missing paths are ignored, the input is not mutated."""

    type_name = "drop_fields"
    Config = DropFieldsConfig
    main_field: ClassVar[str] = "paths"

    def __init__(
        self,
        config: DropFieldsConfig,
        *,
        name: str | None = None,
        context: StepContext | None = None,
    ) -> None:
        super().__init__(config, name=name, context=context)
        problems = []
        self._paths: list[list[PathPart]] = []
        for n, path in enumerate(config.paths):
            try:
                self._paths.append(parse_path(path))
            except ValueError as exc:
                problems.append((f"paths[{n}]", str(exc)))
        if problems:
            raise ConfigError(problems)

    def apply(self, event: CloudEvent) -> list[CloudEvent]:
        data = event.data
        changed = False
        for path in self._paths:
            r = _drop(data, path, 0)
            if r is not _UNCHANGED:
                data = r
                changed = True
        return [with_data(event, data) if changed else event]


PLUGIN = DropFieldsStep.as_plugin(
    "removes fields from the event's data by path",
    example="""\
- drop_fields: [customer.email, 'items[].internal_note', 'items[0]']   # short form: the paths
- drop_fields: {paths: [payment.card]}
""",
)
