"""CloudEvents Kafka protocol binding 1.0 (ARCHITECTURE.md section 3).

Binary mode (the default): every attribute except ``datacontenttype`` is a
``ce_<name>`` header holding its canonical string form in UTF-8 (``time`` as
RFC 3339 with ``Z``, booleans ``true``/``false``); ``datacontenttype`` is the
``content-type`` header; the value is the data.  An event without data has value
``None`` (binding 3.2.2: "a Kafka message with no value"; on a compacted topic
that is a tombstone, so send such events in structured mode there).

Structured mode: the value is the JSON event format and ``content-type`` is
``application/cloudevents+json; charset=utf-8``.  An event whose
``datacontenttype`` starts with ``application/cloudevents`` is always written in
structured mode: in binary mode every reader would take its data for the event.

In both modes the record key is the ``partitionkey`` extension in UTF-8 (``None``
when absent), and in binary mode ``ce_partitionkey`` is sent too, so the key
survives a round trip through consumers that drop it.

Reading: a ``content-type`` starting with ``application/cloudevents`` selects
structured mode, anything else binary mode.  Extension values read from headers
are strings (headers carry no type).  When the event has no ``partitionkey`` but
the record has a UTF-8 key, the key becomes ``partitionkey``; a key that is not
UTF-8 (an Avro key, say) is left out rather than failing the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

from eventpipe.envelope.event import SPECVERSION, CloudEvent, format_time_bytes
from eventpipe.envelope.json import (
    STRUCTURED_CT,
    binary_content_type,
    binary_mode_possible,
    canonical_string,
    decode_structured,
    encode_data,
    encode_structured,
    event_from_binary,
)
from eventpipe.errors import MalformedEventError, UnsupportedMediaTypeError

__all__ = ["KAFKA_STRUCTURED_CT", "KafkaMessage", "from_kafka", "to_kafka"]

KAFKA_STRUCTURED_CT = STRUCTURED_CT + "; charset=utf-8"
_KAFKA_STRUCTURED_CT_BYTES = KAFKA_STRUCTURED_CT.encode()
_SPECVERSION_BYTES = SPECVERSION.encode()
_CE_PREFIX = "ce_"
_CONTENT_TYPE = "content-type"
_PARTITIONKEY = "partitionkey"

Headers = Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None]


@dataclass(slots=True)
class KafkaMessage:
    """What to produce: record key, value and headers (aiokafka's ``send`` takes these)."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _key(event: CloudEvent) -> bytes | None:
    pk = event.extensions.get(_PARTITIONKEY)
    return None if pk is None else canonical_string(pk).encode("utf-8")


def to_kafka(
    event: CloudEvent, *, mode: Literal["binary", "structured"] = "binary"
) -> KafkaMessage:
    """Encode ``event`` as a Kafka record in binary (default) or structured mode."""
    if mode == "binary" and binary_mode_possible(event.datacontenttype):
        headers: list[tuple[str, bytes]] = [
            ("ce_specversion", _SPECVERSION_BYTES),
            ("ce_id", event.id.encode("utf-8")),
            ("ce_source", event.source.encode("utf-8")),
            ("ce_type", event.type.encode("utf-8")),
        ]
        append = headers.append
        if event.subject is not None:
            append(("ce_subject", event.subject.encode("utf-8")))
        if event.time is not None:
            append(("ce_time", format_time_bytes(event.time)))
        if event.dataschema is not None:
            append(("ce_dataschema", event.dataschema.encode("utf-8")))
        for name, v in event.extensions.items():
            append((_CE_PREFIX + name, canonical_string(v).encode("utf-8")))
        value = encode_data(event)
        ct = binary_content_type(event)
        if ct is not None:
            append((_CONTENT_TYPE, ct.encode("utf-8")))
        return KafkaMessage(key=_key(event), value=value, headers=headers)
    if mode in ("structured", "binary"):
        return KafkaMessage(
            key=_key(event),
            value=encode_structured(event),
            headers=[(_CONTENT_TYPE, _KAFKA_STRUCTURED_CT_BYTES)],
        )
    raise ValueError(f"mode must be 'binary' or 'structured', not {mode!r}")


_CT_HEADER: Final = "\x00content-type"  # not an attribute name: the content-type header


@lru_cache(maxsize=1024)
def _header_attr(name: str) -> str | None:
    """The attribute a header carries (``ce_id`` -> ``id``, any case), the
    content-type header as :data:`_CT_HEADER`, or None; cached, as the same few
    names arrive on every record."""
    lname = name.lower()
    if lname.startswith(_CE_PREFIX):
        return lname[3:]
    if lname == _CONTENT_TYPE:
        return _CT_HEADER
    return None


def _text(field: str, raw: bytes | str) -> str:
    if isinstance(raw, str):  # some clients hand out decoded header values
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEventError(field, f"header value is not valid UTF-8: {exc}") from exc
    except AttributeError:
        raise MalformedEventError(
            field, f"header value must be bytes, not {type(raw).__name__}"
        ) from None


def _key_text(key: bytes | str | None) -> str | None:
    if not key:
        return None
    if isinstance(key, str):
        return key
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def from_kafka(key: bytes | str | None, value: bytes | None, headers: Headers | None) -> CloudEvent:
    """Decode a Kafka record (binary or structured mode) into a CloudEvent.

    ``headers`` is what aiokafka gives (a sequence of ``(str, bytes)``), or a mapping.
    Raises InvalidEventError / MalformedEventError naming the field."""
    items: Iterable[tuple[str, bytes | None]]
    if headers is None:
        items = ()
    elif isinstance(headers, Mapping):
        items = headers.items()
    else:
        items = headers

    content_type: str | None = None
    attrs: dict[str, bytes] = {}
    for name, raw in items:
        if raw is None:
            continue
        attr = _header_attr(name)
        if attr is None:
            continue
        if attr is _CT_HEADER:
            content_type = _text("datacontenttype", raw).strip() or None
        else:
            attrs[attr] = raw

    if content_type is not None and content_type[:23].lower() == "application/cloudevents":
        base = content_type.split(";", 1)[0].strip().lower()
        if base != STRUCTURED_CT:
            raise UnsupportedMediaTypeError(content_type, [STRUCTURED_CT])
        if value is None:
            raise MalformedEventError("value", "a structured-mode record needs a value")
        event = decode_structured(value, field="value")
        if _PARTITIONKEY not in event.extensions:
            pk = _key_text(key)
            if pk is not None:
                event.extensions[_PARTITIONKEY] = pk
        return event

    # Binary mode.
    try:
        texts = {
            name: raw if raw.__class__ is str else raw.decode("utf-8")
            for name, raw in attrs.items()
        }
    except (UnicodeDecodeError, AttributeError):
        # Slow path, only to name the bad header.
        texts = {name: _text(name, raw) for name, raw in attrs.items()}
    if _PARTITIONKEY not in texts:
        pk = _key_text(key)
        if pk is not None:
            texts[_PARTITIONKEY] = pk
    return event_from_binary(texts, content_type, value)
