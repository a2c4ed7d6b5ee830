"""The CloudEvents JSON event format (structured mode), shared by the Kafka and HTTP bindings.

Also the pieces of binary mode that both bindings share: how ``data`` becomes a
payload and back, and the canonical string form of attribute values.

Data rules (see also :mod:`eventpipe.envelope.event`):

* ``bytes`` data is written as ``data_base64``; everything else as ``data``.
* Reading ``data`` with a JSON (or absent) ``datacontenttype`` keeps the JSON value;
  with any other content type the string is encoded to UTF-8 ``bytes``, so that a
  non-JSON event always carries ``bytes``.  ``data_base64`` gives ``bytes``, or the
  parsed JSON value when the content type is declared JSON.
* ``"data": null`` and a missing ``data`` both read as "no data" (``None``).
* Attributes set to ``null`` are treated as absent (JSON format 2.2).
* Numbers are read as jq reads them: IEEE doubles (integers within 64 bits stay
  exact), and a number beyond a double's range (``1e400``, valid JSON that a
  PostgreSQL json column may hold) is clamped to +-1.7976931348623157e308 as libjq
  clamps it, instead of making the whole document unreadable (:func:`loads`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from eventpipe.envelope.event import (
    NOT_EXTENSIONS,
    OPTIONAL_STRINGS,
    REQUIRED,
    SPECVERSION,
    CloudEvent,
    ExtensionValue,
    is_json_content_type,
    parse_time,
    validate_extension_name,
)
from eventpipe.errors import InvalidEventError, MalformedEventError

STRUCTURED_CT = "application/cloudevents+json"
BATCH_CT = "application/cloudevents-batch+json"
JSON_CT = "application/json"

_BINARY = (bytes, bytearray, memoryview)
_DBL_MAX = sys.float_info.max
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson reads as an int


# -------------------------------------------------------------------- JSON
def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """``orjson.loads``; a document it refuses only because a number is beyond a
    double's range is read again with those numbers clamped, as libjq reads them.
    Anything else orjson refuses raises its ``JSONDecodeError``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        clamped = False

        def number(text: str) -> float:
            nonlocal clamped
            f = float(text)
            if math.isinf(f):
                clamped = True
                return math.copysign(_DBL_MAX, f)
            return f

        def integer(text: str) -> int | float:
            if len(text) <= 20:
                v = int(text)
                if _INT_MIN <= v <= _INT_MAX:
                    return v
            return number(text)

        def constant(name: str) -> Any:
            raise ValueError(f"{name} is not JSON")

        try:
            value = json.loads(
                bytes(raw) if isinstance(raw, bytearray | memoryview) else raw,
                parse_float=number,
                parse_int=integer,
                parse_constant=constant,
            )
        except (ValueError, RecursionError):
            raise exc from None
        if not clamped:  # refused for another reason: orjson's verdict stands
            raise exc from None
        return value


# ------------------------------------------------------------------- values
def canonical_string(value: ExtensionValue) -> str:
    """The spec's canonical string form: ``true``/``false``, decimal integers, strings as is."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def dumps_data(data: Any) -> bytes:
    """JSON-encode a data value; values JSON cannot hold are an InvalidEventError on ``data``."""
    try:
        return orjson.dumps(data)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise InvalidEventError("data", f"cannot be encoded as JSON: {exc}") from exc


def binary_content_type(event: CloudEvent) -> str | None:
    """The content type to send in binary mode.

    JSON data without a ``datacontenttype`` is sent as ``application/json``, as the
    JSON format (3.1.2) asks when re-encoding for another binding; otherwise the
    attribute as is (``None`` means no content-type header)."""
    ct = event.datacontenttype
    if ct is None and event.data is not None and not isinstance(event.data, _BINARY):
        return JSON_CT
    return ct


def binary_mode_possible(content_type: str | None) -> bool:
    """False when the content type would make readers take the message for a
    structured (or batch) CloudEvent: data typed ``application/cloudevents...``
    travels in structured mode, where the attributes cannot be mistaken."""
    return content_type is None or content_type[:23].lower() != "application/cloudevents"


def encode_data(event: CloudEvent) -> bytes | None:
    """The binary-mode payload: ``None`` for no data, bytes as is, JSON via orjson,
    strings with a non-JSON content type as UTF-8."""
    data = event.data
    if data is None:
        return None
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    if is_json_content_type(event.datacontenttype):
        return dumps_data(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    raise InvalidEventError(
        "data",
        f"must be bytes or str for the non-JSON datacontenttype {event.datacontenttype!r}, "
        f"not {type(data).__name__}",
    )


def decode_data(payload: bytes | None, content_type: str | None, field: str = "data") -> Any:
    """Binary-mode payload to a data value (the inverse of :func:`encode_data`).

    An empty or missing payload is no data.  A JSON content type must hold valid
    JSON (else MalformedEventError on ``field``); a non-JSON one gives ``bytes``.
    Without a content type the payload is read as JSON when it parses, and kept as
    ``bytes`` when it does not (the SDKs send JSON data without a content type)."""
    if not payload:
        return None
    if content_type is None:
        try:
            return loads(payload)
        except orjson.JSONDecodeError:
            return bytes(payload)
    if is_json_content_type(content_type):
        try:
            return loads(payload)
        except orjson.JSONDecodeError as exc:
            raise MalformedEventError(
                field, f"is not valid JSON for content type {content_type!r}: {exc}"
            ) from exc
    return bytes(payload)


_BINARY_STRING_ATTRS = frozenset({"id", "source", "type", "subject", "dataschema"})


def event_from_binary(
    attrs: dict[str, str], content_type: str | None, payload: bytes | None
) -> CloudEvent:
    """Build an event from binary-mode parts: ``attrs`` maps attribute names (the
    header names without ``ce_`` / ``ce-``) to decoded strings, ``content_type`` is
    the content-type header (``None`` when absent) and ``payload`` the value/body."""
    specversion = attrs.get("specversion")
    if specversion is None:
        raise InvalidEventError(
            "specversion",
            "is required: a binary-mode CloudEvent needs the specversion header "
            "(or send application/cloudevents+json)",
        )
    kw: dict[str, Any] = {}
    extensions: dict[str, ExtensionValue] = {}
    for name, v in attrs.items():
        if name in _BINARY_STRING_ATTRS:
            kw[name] = v
        elif name == "time":
            kw["time"] = parse_time(v)
        elif name == "specversion":
            continue
        elif name == "datacontenttype":
            # Not where the bindings put it, but unambiguous; the content-type header wins.
            if content_type is None:
                content_type = v or None
        else:
            extensions[name] = v  # names and values are checked by CloudEvent.validate
    for name in REQUIRED:
        if name not in kw:
            raise InvalidEventError(name, "is required")
    return CloudEvent(
        specversion=specversion,
        datacontenttype=content_type,
        data=decode_data(payload, content_type, "data"),
        extensions=extensions,
        **kw,
    )


# --------------------------------------------------------------- structured
def to_structured_dict(event: CloudEvent) -> dict[str, Any]:
    """The event as a JSON-format object: attributes, plus ``data`` (JSON value, or a
    string for text content types) or ``data_base64`` (bytes)."""
    d = event.attributes()
    data = event.data
    if data is not None:
        if isinstance(data, _BINARY):
            d["data_base64"] = base64.b64encode(data).decode("ascii")
        elif isinstance(data, str) or is_json_content_type(event.datacontenttype):
            d["data"] = data
        else:
            raise InvalidEventError(
                "data",
                f"must be bytes or str for the non-JSON datacontenttype "
                f"{event.datacontenttype!r}, not {type(data).__name__}",
            )
    return d


def from_structured_dict(d: Mapping[str, Any]) -> CloudEvent:
    """Validate a JSON-format object and build the event.

    Raises InvalidEventError naming the offending member (``id``, ``time``, an
    extension's name, ``data_base64`` ...)."""
    if not isinstance(d, Mapping):
        raise InvalidEventError("event", "a structured CloudEvent must be a JSON object")
    get = d.get
    specversion = get("specversion")
    if specversion is None:
        raise InvalidEventError("specversion", "is required")
    if specversion != SPECVERSION:
        raise InvalidEventError(
            "specversion", f"{specversion!r} is not supported; use {SPECVERSION!r}"
        )
    for name in REQUIRED:
        v = get(name)
        if v is None:
            raise InvalidEventError(name, "is required")
        if not isinstance(v, str) or not v:
            raise InvalidEventError(name, "must be a non-empty string")
    for name in OPTIONAL_STRINGS:
        v = get(name)
        if v is not None and (not isinstance(v, str) or not v):
            raise InvalidEventError(name, "must be a non-empty string when set")
    t = get("time")
    time = None if t is None else parse_time(t)

    extensions: dict[str, ExtensionValue] = {}
    for k, v in d.items():
        if k in NOT_EXTENSIONS or v is None:
            continue
        validate_extension_name(k)
        if not isinstance(v, str | int):  # bool is an int
            raise InvalidEventError(
                k, f"extension values must be string, integer or boolean, not {type(v).__name__}"
            )
        extensions[k] = v

    ct: str | None = get("datacontenttype")
    data: Any = get("data")
    b64 = get("data_base64")
    if b64 is not None:
        if data is not None:
            raise InvalidEventError("data_base64", "data and data_base64 are mutually exclusive")
        if not isinstance(b64, str):
            raise InvalidEventError("data_base64", "must be a base64 string")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidEventError("data_base64", f"is not valid base64: {exc}") from exc
        # An explicitly JSON content type: the bytes are a JSON document.
        if ct is not None and is_json_content_type(ct):
            data = decode_data(raw, ct, "data_base64")
        else:
            data = raw
    elif data is not None and not is_json_content_type(ct):
        if not isinstance(data, str):
            raise InvalidEventError(
                "data", f"must be a string for the non-JSON datacontenttype {ct!r}"
            )
        data = data.encode("utf-8")

    return CloudEvent(
        id=d["id"],
        source=d["source"],
        type=d["type"],
        subject=get("subject"),
        time=time,
        datacontenttype=ct,
        dataschema=get("dataschema"),
        data=data,
        extensions=extensions,
    )


def encode_structured(event: CloudEvent) -> bytes:
    """The event in the JSON event format (``application/cloudevents+json``)."""
    d = to_structured_dict(event)
    try:
        return orjson.dumps(d)
    except TypeError as exc:
        raise InvalidEventError("data", f"cannot be encoded as JSON: {exc}") from exc


def _loads(body: bytes, field: str) -> Any:
    try:
        return loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEventError(field, f"is not valid JSON: {exc}") from exc


def decode_structured(body: bytes, *, field: str = "body") -> CloudEvent:
    """Parse a JSON-format event.  Unparseable JSON, or JSON that is not an object,
    is a MalformedEventError on ``field``."""
    d = _loads(body, field)
    if not isinstance(d, dict):
        raise MalformedEventError(field, "a structured CloudEvent must be a JSON object")
    return from_structured_dict(d)


def encode_batch(events: Iterable[CloudEvent]) -> bytes:
    """Events in the JSON batch format (``application/cloudevents-batch+json``)."""
    items = [to_structured_dict(e) for e in events]
    try:
        return orjson.dumps(items)
    except TypeError as exc:
        # Name the element that failed.
        for i, item in enumerate(items):
            try:
                orjson.dumps(item)
            except TypeError:
                raise InvalidEventError(f"[{i}].data", f"cannot be encoded as JSON: {exc}") from exc
        raise InvalidEventError("data", f"cannot be encoded as JSON: {exc}") from exc


def decode_batch(body: bytes, *, field: str = "body") -> list[CloudEvent]:
    """Parse a JSON batch (an array, possibly empty).  Errors in an element carry its
    index as a prefix of the field, e.g. ``[3].id``."""
    items = _loads(body, field)
    if not isinstance(items, list):
        raise MalformedEventError(field, "a CloudEvents batch must be a JSON array")
    out: list[CloudEvent] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidEventError(f"[{i}]", "a structured CloudEvent must be a JSON object")
        try:
            out.append(from_structured_dict(item))
        except InvalidEventError as exc:
            raise InvalidEventError(f"[{i}].{exc.field}", exc.reason) from exc
        except MalformedEventError as exc:
            raise MalformedEventError(f"[{i}].{exc.field}", exc.reason) from exc
    return out
