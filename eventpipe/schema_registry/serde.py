"""Serializers for Kafka record keys and values through a schema registry, in
Confluent's wire format, compatible with Confluent's own serializers both ways.

    ser = Serializer(client, Schema(avro_text))                   # or schema_type JSON
    data = await ser.serialize("orders", {"id": 1})              # subject orders-value
    value = await Deserializer(client).deserialize(data)        # schema fetched by id

The serializer registers its schema on first use (``auto_register``), or looks it
up, or uses the subject's latest version (``use_latest``); JSON values are
validated against their schema before they are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .client import SchemaRegistryClient
from .models import AVRO, Schema
from .naming import SubjectNameStrategy, topic_name_strategy
from .schemas import AvroSchema, JsonSchema, ParsedSchema
from .wire import (
    SerializationError,
    avro_decode,
    avro_encode,
    frame,
    json_decode,
    json_encode,
    unframe,
)


def _validate_json(schema: JsonSchema, value: Any) -> None:
    errors = list(schema.validator().iter_errors(value))
    if errors:
        shown = "; ".join(
            f"$/{'/'.join(str(p) for p in e.instance_path)}: {e.message}" for e in errors[:5]
        )
        raise SerializationError(f"value does not match the JSON Schema: {shown}")


def encode_value(schema: ParsedSchema, value: Any, *, validate: bool = True) -> bytes:
    """The payload (without the 5-byte header) for ``value`` under ``schema``."""
    if isinstance(schema, AvroSchema):
        return avro_encode(schema, value)
    assert isinstance(schema, JsonSchema)
    if validate:
        _validate_json(schema, value)
    return json_encode(value)


class Serializer:
    def __init__(
        self,
        client: SchemaRegistryClient,
        schema: Schema | str,
        *,
        schema_type: str = AVRO,
        subject_name_strategy: SubjectNameStrategy = topic_name_strategy,
        auto_register: bool = True,
        use_latest: bool = False,
        validate: bool = True,
    ) -> None:
        self.client = client
        self.schema = schema if isinstance(schema, Schema) else Schema(schema, schema_type)
        self.strategy = subject_name_strategy
        self.auto_register = auto_register
        self.use_latest = use_latest
        self.validate = validate
        self._parsed: ParsedSchema | None = None
        self._by_subject: dict[str, tuple[int, ParsedSchema]] = {}

    async def _target(self, topic: str, is_key: bool) -> tuple[int, ParsedSchema]:
        if self._parsed is None:
            self._parsed = await self.client.parse(self.schema)
        subject = self.strategy(topic, is_key, self._parsed.record_name)
        found = self._by_subject.get(subject)
        if found is not None:
            return found
        if self.use_latest:
            reg = await self.client.get_latest(subject)
            target = (reg.id, await self.client.get_parsed(reg.id))
        elif self.auto_register:
            target = (await self.client.register(subject, self.schema), self._parsed)
        else:
            target = ((await self.client.lookup(subject, self.schema)).id, self._parsed)
        self._by_subject[subject] = target
        return target

    async def serialize(self, topic: str, value: Any, *, is_key: bool = False) -> bytes:
        schema_id, parsed = await self._target(topic, is_key)
        return frame(schema_id, encode_value(parsed, value, validate=self.validate))


@dataclass(frozen=True, slots=True)
class Decoded:
    schema_id: int
    schema: ParsedSchema
    value: Any


class Deserializer:
    """Decodes anything in the wire format whose schema id the registry knows: Avro
    (optionally resolved to ``reader_schema``) or JSON (validated with ``validate``)."""

    def __init__(
        self,
        client: SchemaRegistryClient,
        *,
        reader_schema: Schema | None = None,
        validate: bool = False,
    ) -> None:
        self.client = client
        self.reader_schema = reader_schema
        self.validate = validate
        self._reader: ParsedSchema | None = None

    async def decode(self, data: bytes) -> Decoded:
        schema_id, payload = unframe(data)
        writer = await self.client.get_parsed(schema_id)
        if isinstance(writer, AvroSchema):
            reader = None
            if self.reader_schema is not None:
                if self._reader is None:
                    self._reader = await self.client.parse(self.reader_schema)
                if isinstance(self._reader, AvroSchema):
                    reader = self._reader
            return Decoded(schema_id, writer, avro_decode(payload, writer, reader))
        assert isinstance(writer, JsonSchema)
        value = json_decode(payload)
        if self.validate:
            _validate_json(writer, value)
        return Decoded(schema_id, writer, value)

    async def deserialize(self, data: bytes) -> Any:
        return (await self.decode(data)).value
