"""The JSON form of a CloudEvent that jq programs see, and back.

``filter``, ``route``, ``set`` and ``jq`` with ``apply_to: event`` run on the
event's structured-mode JSON object (CloudEvents JSON format): the context
attributes, extensions at top level, then ``data``.  Two rules keep programs
simple and fused programs equivalent to unfused ones:

* ``data`` is always present (``null`` when the event has none);
* binary data appears as ``data_base64`` instead (and ``data`` is absent).

Helpers here are on the per-event path, so they avoid ``CloudEvent.replace``
(which re-validates every attribute) when only ``data`` changes.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from operator import attrgetter
from typing import Any

from eventpipe.envelope.event import (
    CORE_ATTRIBUTES,
    NOT_EXTENSIONS,
    CloudEvent,
    format_time,
    is_json_content_type,
)
from eventpipe.envelope.json import from_structured_dict
from eventpipe.errors import InvalidEventError

_last_time: tuple[datetime | None, str] = (None, "")
_json_content_types: dict[str | None, bool] = {None: True}


def _time_text(t: datetime) -> str:
    # Steps of one chain format the same event's time again and again: keep the last.
    global _last_time
    last = _last_time
    if last[0] is t:
        return last[1]
    text = format_time(t)
    _last_time = (t, text)
    return text


def has_json_data(event: CloudEvent) -> bool:
    """True when ``event.data`` is a JSON value a jq program may run on."""
    if isinstance(event.data, bytes | bytearray):
        return False
    ct = event.datacontenttype
    known = _json_content_types.get(ct)
    if known is None:
        known = is_json_content_type(ct)
        if len(_json_content_types) < 256:
            _json_content_types[ct] = known
    return known


_PLAIN_ATTRIBUTES = CORE_ATTRIBUTES - {"time"}  # the form holds them as they are


def _form_data(event: CloudEvent) -> Any:
    data = event.data
    return None if isinstance(data, bytes | bytearray) else data


def _form_time(event: CloudEvent) -> Any:
    return None if event.time is None else _time_text(event.time)


def _form_data_base64(event: CloudEvent) -> Any:
    data = event.data
    if isinstance(data, bytes | bytearray):
        return base64.b64encode(data).decode("ascii")
    return None


def event_form_getter(key: str) -> Callable[[CloudEvent], Any]:
    """A function answering ``to_event_form(event).get(key)`` without building the
    whole object (the postgres sink's plain-path columns)."""
    if key in _PLAIN_ATTRIBUTES:
        return attrgetter(key)
    special = {"data": _form_data, "time": _form_time, "data_base64": _form_data_base64}
    if key in special:
        return special[key]

    def extension(event: CloudEvent) -> Any:
        return event.extensions.get(key)  # extensions never take a reserved name

    return extension


def to_event_form(event: CloudEvent) -> dict[str, Any]:
    """The structured JSON object of ``event`` (see the module docstring)."""
    d: dict[str, Any] = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    if event.subject is not None:
        d["subject"] = event.subject
    if event.time is not None:
        d["time"] = _time_text(event.time)
    if event.datacontenttype is not None:
        d["datacontenttype"] = event.datacontenttype
    if event.dataschema is not None:
        d["dataschema"] = event.dataschema
    if event.extensions:
        d.update(event.extensions)
    data = event.data
    if isinstance(data, bytes | bytearray):
        d["data_base64"] = base64.b64encode(data).decode("ascii")
    else:
        d["data"] = data
    return d


def extension_value(value: Any) -> Any:
    """CloudEvents has no float type and JSON does not tell ``3.0`` from ``3``: an
    integral float becomes an int (engines differ on which they return)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def from_event_form(obj: Any) -> CloudEvent:
    """A validated CloudEvent from its structured JSON object; raises InvalidEventError.

    The JSON event format's reader (``envelope.json.from_structured_dict``), after
    turning integral floats in extensions into ints (see :func:`extension_value`)."""
    if not isinstance(obj, Mapping):
        raise InvalidEventError("event", f"must be a JSON object, not {json_type(obj)}")
    d = {k: extension_value(v) if k not in NOT_EXTENSIONS else v for k, v in obj.items()}
    return from_structured_dict(d)


def with_data(event: CloudEvent, data: Any) -> CloudEvent:
    """A copy of ``event`` with new JSON ``data`` (attributes are already valid)."""
    return CloudEvent(
        id=event.id,
        source=event.source,
        type=event.type,
        data=data,
        subject=event.subject,
        time=event.time,
        datacontenttype=event.datacontenttype,
        dataschema=event.dataschema,
        extensions=event.extensions,
        specversion=event.specversion,
        validate=False,
    )


def distinct_ids(outputs: list[CloudEvent]) -> list[CloudEvent]:
    """Give outputs of one input event that share (source, id) distinct ids.

    Dedup downstream keys on (source, id), so two events produced from one
    input must not share it.  Output ``n`` (its position among the outputs)
    gets ``<id>:<n>``: deterministic, so a replay yields the same ids.  A
    single output keeps its id.
    """
    if len(outputs) < 2:
        return outputs
    counts = Counter((e.source, e.id) for e in outputs)
    if len(counts) == len(outputs):
        return outputs
    return [
        e if counts[(e.source, e.id)] == 1 else e.replace(id=f"{e.id}:{n}")
        for n, e in enumerate(outputs)
    ]


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
