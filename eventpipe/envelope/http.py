"""CloudEvents HTTP protocol binding 1.0: binary, structured and batch modes.

Binary mode: attributes are ``ce-<name>`` headers (canonical string form,
percent-encoded per binding 3.1.3.2: space, ``"``, ``%`` and anything outside
printable ASCII), ``datacontenttype`` is ``Content-Type`` and the body is the data.
An event without data has an empty body.  JSON data without a ``datacontenttype``
is sent with ``Content-Type: application/json`` (JSON format 3.1.2).

Reading picks the mode from ``Content-Type``: ``application/cloudevents+json``
is structured, ``application/cloudevents-batch+json`` a batch; otherwise ``ce-*``
headers mean binary mode, and without them the request is not a CloudEvent
(UnsupportedMediaTypeError, HTTP 415).  Header values are unquoted when sent as
quoted strings, then percent-decoded; bytes that are not UTF-8 are rejected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal
from urllib.parse import quote, unquote_to_bytes

from eventpipe.envelope.event import (
    SPECVERSION,
    CloudEvent,
    format_time,
    validate_extension_name,
)
from eventpipe.envelope.json import (
    BATCH_CT,
    STRUCTURED_CT,
    binary_content_type,
    binary_mode_possible,
    canonical_string,
    decode_batch,
    decode_structured,
    encode_batch,
    encode_data,
    encode_structured,
    event_from_binary,
)
from eventpipe.errors import InvalidEventError, MalformedEventError, UnsupportedMediaTypeError

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "BATCH_CT",
    "STRUCTURED_CT",
    "decode_header_value",
    "encode_header_value",
    "from_http",
    "to_http",
    "to_http_batch",
]

# What a 415 answer lists; binary mode takes any Content-Type along with ce-* headers.
ACCEPTED_CONTENT_TYPES = [STRUCTURED_CT, BATCH_CT]

_CE_PREFIX = "ce-"
_CONTENT_TYPE = "content-type"
# Printable ASCII except space (not in the range), double-quote and percent stay as is.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
_NEEDS_ENCODING = re.compile(r"[^\x21\x23\x24\x26-\x7e]")
_QUOTED_PAIR = re.compile(r"\\(.)")
_NOT_HEADER_TEXT = re.compile(r"[^\x20-\x7e]")


def encode_header_value(value: str) -> str:
    """Percent-encode an attribute's string form for a ``ce-*`` header (upper-case hex)."""
    if _NEEDS_ENCODING.search(value) is None:
        return value
    return quote(value, safe=_SAFE)


def decode_header_value(field: str, value: str) -> str:
    """Undo :func:`encode_header_value`: strip a quoted-string (RFC 7230 3.2.6), then one
    round of percent-decoding; invalid UTF-8 is a MalformedEventError on ``field``."""
    v = value.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = _QUOTED_PAIR.sub(r"\1", v[1:-1])
    if "%" not in v and v.isascii():
        return v
    try:
        return unquote_to_bytes(v).decode("utf-8")
    except UnicodeError as exc:  # bad UTF-8 after decoding, or undecodable raw header bytes
        raise MalformedEventError(
            field, f"header value is not valid UTF-8 once percent-decoded: {exc}"
        ) from exc


def _base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def from_http(headers: Mapping[str, str], body: bytes) -> list[CloudEvent]:
    """Decode an HTTP request or response into its events (one, or a batch of any size).

    ``headers`` may be any mapping (aiohttp's CIMultiDictProxy, a plain dict); names
    are matched case-insensitively."""
    h = {k.lower(): v for k, v in headers.items()}
    content_type = h.get(_CONTENT_TYPE)
    base = _base_type(content_type) if content_type else ""
    if base == STRUCTURED_CT:
        return [decode_structured(body, field="body")]
    if base == BATCH_CT:
        return decode_batch(body, field="body")
    if not base.startswith("application/cloudevents"):
        attrs = {
            k[3:]: decode_header_value(k[3:], v) for k, v in h.items() if k.startswith(_CE_PREFIX)
        }
        if attrs:
            ct = content_type.strip() if content_type else None
            return [event_from_binary(attrs, ct or None, body)]
    raise UnsupportedMediaTypeError(content_type or "", list(ACCEPTED_CONTENT_TYPES))


def to_http(
    event: CloudEvent, *, mode: Literal["binary", "structured"] = "binary"
) -> tuple[dict[str, str], bytes]:
    """Encode ``event`` as HTTP headers and body in binary (default) or structured mode
    (always structured for data typed ``application/cloudevents...``, which readers
    would take for the event in binary mode)."""
    if mode == "binary" and binary_mode_possible(event.datacontenttype):
        headers = {
            "ce-specversion": SPECVERSION,
            "ce-id": encode_header_value(event.id),
            "ce-source": encode_header_value(event.source),
            "ce-type": encode_header_value(event.type),
        }
        if event.subject is not None:
            headers["ce-subject"] = encode_header_value(event.subject)
        if event.time is not None:
            headers["ce-time"] = format_time(event.time)
        if event.dataschema is not None:
            headers["ce-dataschema"] = encode_header_value(event.dataschema)
        for name, v in event.extensions.items():
            validate_extension_name(name)  # a header name: checked even if the event was not
            headers[_CE_PREFIX + name] = encode_header_value(canonical_string(v))
        body = encode_data(event)
        ct = binary_content_type(event)
        if ct is not None:
            if _NOT_HEADER_TEXT.search(ct) is not None:
                # Content-Type has no percent-encoding: refuse what would break the header.
                raise InvalidEventError(
                    "datacontenttype", f"{ct!r} cannot be sent as a Content-Type header"
                )
            headers[_CONTENT_TYPE] = ct
        return headers, body or b""
    if mode in ("structured", "binary"):
        return {_CONTENT_TYPE: STRUCTURED_CT}, encode_structured(event)
    raise ValueError(f"mode must be 'binary' or 'structured', not {mode!r}")


def to_http_batch(events: Iterable[CloudEvent]) -> tuple[dict[str, str], bytes]:
    """Encode events in batch mode (``application/cloudevents-batch+json``)."""
    return {_CONTENT_TYPE: BATCH_CT}, encode_batch(events)
