"""Confluent's wire format: magic byte 0, the schema id as 4 bytes big-endian, then
the payload (Avro binary without a container, or JSON text).

    data = frame(schema_id, avro_encode(parsed, record))
    schema_id, payload = unframe(data)
    record = avro_decode(payload, writer_parsed)
"""

from __future__ import annotations

import io
import struct
from typing import Any

import orjson
from fastavro import schemaless_reader, schemaless_writer

from eventpipe.errors import PermanentError

from .schemas import AvroSchema

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
HEADER_SIZE = HEADER.size  # 5


class WireFormatError(PermanentError):
    """The bytes are not in Confluent's wire format, or do not decode."""


class SerializationError(PermanentError):
    """A value does not fit its schema."""


def frame(schema_id: int, payload: bytes) -> bytes:
    if not 0 <= schema_id <= 0xFFFF_FFFF:
        raise SerializationError(f"schema id {schema_id} does not fit in 4 bytes")
    return HEADER.pack(MAGIC_BYTE, schema_id) + payload


def unframe(data: bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """(schema id, payload); raises :class:`WireFormatError` for other bytes."""
    raw = bytes(data)
    if len(raw) < HEADER_SIZE:
        raise WireFormatError(
            f"{len(raw)} byte(s) is too short for the wire format (magic byte + 4-byte id)"
        )
    magic, schema_id = HEADER.unpack_from(raw)
    if magic != MAGIC_BYTE:
        raise WireFormatError(
            f"unknown magic byte {magic}; expected {MAGIC_BYTE} (Confluent wire format)"
        )
    return schema_id, raw[HEADER_SIZE:]


def schema_id_of(data: bytes | bytearray | memoryview) -> int:
    return unframe(data)[0]


def avro_encode(schema: AvroSchema, value: Any) -> bytes:
    buf = io.BytesIO()
    try:
        schemaless_writer(buf, schema.wire, value)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise SerializationError(f"value does not fit the Avro schema: {exc}") from exc
    return buf.getvalue()


def avro_decode(payload: bytes, writer: AvroSchema, reader: AvroSchema | None = None) -> Any:
    buf = io.BytesIO(payload)
    try:
        value = schemaless_reader(buf, writer.wire, reader.wire if reader is not None else None)
    except EOFError as exc:
        raise WireFormatError("the Avro payload ends early") from exc
    except Exception as exc:  # fastavro raises SchemaResolutionError, ValueError, ...
        raise WireFormatError(f"the Avro payload does not decode: {exc}") from exc
    if buf.tell() != len(payload):
        raise WireFormatError(
            f"{len(payload) - buf.tell()} byte(s) left after the Avro value; wrong schema?"
        )
    return value


def json_encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise SerializationError(f"value is not JSON-serialisable: {exc}") from exc


def json_decode(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise WireFormatError(f"the JSON payload does not parse: {exc}") from exc
