"""confluent-kafka's own SchemaRegistryClient and Avro serializers, unchanged,
against our registry on a real TCP port; and bytes crossing between its
serializers and ours in both directions."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestServer
from confluent_kafka.schema_registry import Schema as CSchema
from confluent_kafka.schema_registry import SchemaReference as CReference
from confluent_kafka.schema_registry import SchemaRegistryClient as ConfluentClient
from confluent_kafka.schema_registry import (
    SchemaRegistryError,
    record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from eventpipe.db.pool import open_pool
from eventpipe.schema_registry import naming
from eventpipe.schema_registry.client import SchemaRegistryClient
from eventpipe.schema_registry.models import Schema, SchemaReference
from eventpipe.schema_registry.serde import Deserializer, Serializer
from eventpipe.schema_registry.server import build_registry_app
from eventpipe.schema_registry.wire import frame, unframe
from eventpipe.settings import Settings

T = TypeVar("T")


@pytest.fixture
async def registry_url(settings: Settings) -> AsyncIterator[str]:
    pool = await open_pool(settings.database)
    server = TestServer(build_registry_app(pool), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        await pool.close()


@pytest.fixture
async def confluent(registry_url: str) -> AsyncIterator[ConfluentClient]:
    client = ConfluentClient({"url": registry_url, "max.retries": 0})
    yield client
    await asyncio.to_thread(client.close)


@pytest.fixture
async def ours(registry_url: str) -> AsyncIterator[SchemaRegistryClient]:
    async with SchemaRegistryClient(registry_url) as client:
        yield client


async def sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The confluent client blocks: run it off the event loop serving the registry."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def unique_record(*fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": f"R{uuid.uuid4().hex}",
        "namespace": "com.acme",
        "fields": list(fields) or [{"name": "id", "type": "long"}],
    }


@pytest.fixture
def topic_name() -> str:
    return f"sr-{uuid.uuid4().hex[:12]}"


async def test_confluent_client_registers_and_reads(
    confluent: ConfluentClient, topic_name: str
) -> None:
    subject = f"{topic_name}-value"
    v1 = unique_record({"name": "id", "type": "long"})
    schema_id = await sync(confluent.register_schema, subject, CSchema(json.dumps(v1), "AVRO"))
    assert isinstance(schema_id, int)
    # a fresh client (no cache) reads it back
    fresh = ConfluentClient({"url": confluent._rest_client.base_urls[0]})
    try:
        got = await sync(fresh.get_schema, schema_id)
        assert got.schema_str is not None and json.loads(got.schema_str) == v1
        assert got.schema_type == "AVRO"
        latest = await sync(fresh.get_latest_version, subject)
        assert (latest.schema_id, latest.version, latest.subject) == (schema_id, 1, subject)
        assert (await sync(fresh.get_version, subject, 1)).schema_id == schema_id
        found = await sync(fresh.lookup_schema, subject, CSchema(json.dumps(v1), "AVRO"))
        assert (found.schema_id, found.version) == (schema_id, 1)
        assert subject in await sync(fresh.get_subjects)
        assert await sync(fresh.get_versions, subject) == [1]
        assert set(await sync(fresh.get_schema_types)) == {"AVRO", "JSON"}
        versions = await sync(fresh.get_schema_versions, schema_id)
        assert [(v.subject, v.version) for v in versions] == [(subject, 1)]
    finally:
        await sync(fresh.close)


async def test_confluent_client_sees_compatibility_and_errors(
    confluent: ConfluentClient, topic_name: str
) -> None:
    subject = f"{topic_name}-value"
    base = unique_record({"name": "id", "type": "long"})
    await sync(confluent.register_schema, subject, CSchema(json.dumps(base), "AVRO"))
    breaking = {**base, "fields": [*base["fields"], {"name": "email", "type": "string"}]}
    assert (
        await sync(confluent.test_compatibility, subject, CSchema(json.dumps(breaking), "AVRO"))
        is False
    )
    assert (
        await sync(
            confluent.test_compatibility_all_versions,
            subject,
            CSchema(json.dumps(breaking), "AVRO"),
            verbose=True,
        )
        is False
    )
    assert (
        await sync(confluent.test_compatibility, subject, CSchema(json.dumps(base), "AVRO")) is True
    )
    with pytest.raises(SchemaRegistryError) as info:
        await sync(confluent.register_schema, subject, CSchema(json.dumps(breaking), "AVRO"))
    assert (info.value.http_status_code, info.value.error_code) == (409, 409)
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in info.value.error_message

    assert await sync(confluent.set_compatibility, subject, "NONE") == {"compatibility": "NONE"}
    assert await sync(confluent.get_compatibility, subject) == "NONE"
    assert await sync(confluent.register_schema, subject, CSchema(json.dumps(breaking), "AVRO")) > 0
    assert await sync(confluent.delete_version, subject, 2) == 2
    assert await sync(confluent.delete_subject, subject) == [1]
    assert await sync(confluent.delete_subject, subject, True) == [1, 2]

    with pytest.raises(SchemaRegistryError) as info:
        await sync(confluent.get_latest_version, subject)
    assert (info.value.http_status_code, info.value.error_code) == (404, 40401)
    with pytest.raises(SchemaRegistryError) as info:
        await sync(confluent.register_schema, subject, CSchema("{broken", "AVRO"))
    assert (info.value.http_status_code, info.value.error_code) == (422, 42201)
    with pytest.raises(SchemaRegistryError) as info:
        await sync(confluent.get_schema, 2_100_000_000)
    assert info.value.error_code == 40403


async def test_confluent_serializer_bytes_decode_with_ours(
    confluent: ConfluentClient, ours: SchemaRegistryClient, topic_name: str
) -> None:
    schema = unique_record(
        {"name": "id", "type": "long"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    )
    ser = await sync(AvroSerializer, confluent, json.dumps(schema))
    ctx = SerializationContext(topic_name, MessageField.VALUE)
    data = await sync(ser, {"id": 9, "tags": ["a", "b"]}, ctx)
    assert data is not None and data[0] == 0
    decoded = await Deserializer(ours).decode(data)
    assert decoded.value == {"id": 9, "tags": ["a", "b"]}
    assert decoded.schema_id == (await ours.get_latest(f"{topic_name}-value")).id


async def test_our_serializer_bytes_decode_with_confluent(
    confluent: ConfluentClient, ours: SchemaRegistryClient, topic_name: str
) -> None:
    schema = unique_record({"name": "id", "type": "long"}, {"name": "name", "type": "string"})
    data = await Serializer(ours, json.dumps(schema)).serialize(topic_name, {"id": 3, "name": "x"})
    schema_id, _ = unframe(data)
    assert schema_id == (await ours.get_latest(f"{topic_name}-value")).id
    de = await sync(AvroDeserializer, confluent)
    ctx = SerializationContext(topic_name, MessageField.VALUE)
    assert await sync(de, data, ctx) == {"id": 3, "name": "x"}


async def test_both_serializers_write_identical_bytes(
    confluent: ConfluentClient, ours: SchemaRegistryClient, topic_name: str
) -> None:
    schema = unique_record(
        {"name": "id", "type": "long"},
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    )
    value = {"id": 123456789, "when": 1_700_000_000_000}
    theirs = await sync(
        await sync(AvroSerializer, confluent, json.dumps(schema)),
        value,
        SerializationContext(topic_name, MessageField.KEY),
    )
    mine = await Serializer(ours, json.dumps(schema)).serialize(topic_name, value, is_key=True)
    assert mine == theirs


async def test_references_across_clients(
    confluent: ConfluentClient, ours: SchemaRegistryClient, topic_name: str
) -> None:
    addr = {
        "type": "record",
        "name": f"Address{uuid.uuid4().hex}",
        "namespace": "com.acme",
        "fields": [{"name": "city", "type": "string"}],
    }
    addr_name = f"com.acme.{addr['name']}"
    addr_subject = f"{topic_name}-address"
    await ours.register(addr_subject, json.dumps(addr))
    order = unique_record({"name": "id", "type": "long"}, {"name": "to", "type": addr_name})
    refs = [CReference(addr_name, addr_subject, 1)]
    # its constructor fetches the references: off the loop serving the registry
    ser = await sync(AvroSerializer, confluent, CSchema(json.dumps(order), "AVRO", refs))
    ctx = SerializationContext(topic_name, MessageField.VALUE)
    value = {"id": 1, "to": {"city": "Oslo"}}
    data = await sync(ser, value, ctx)
    assert await Deserializer(ours).deserialize(data) == value
    reg = await ours.get_latest(f"{topic_name}-value")
    assert reg.schema.references == (SchemaReference(addr_name, addr_subject, 1),)
    # and ours writes, theirs reads (it fetches the reference itself)
    mine = await Serializer(
        ours, Schema(json.dumps(order), "AVRO", reg.schema.references)
    ).serialize(topic_name, value)
    assert await sync(await sync(AvroDeserializer, confluent), mine, ctx) == value


async def test_record_name_strategy_matches_confluent(
    confluent: ConfluentClient, ours: SchemaRegistryClient, topic_name: str
) -> None:
    schema = unique_record({"name": "id", "type": "long"})
    full_name = f"com.acme.{schema['name']}"
    theirs = await sync(
        AvroSerializer,
        confluent,
        json.dumps(schema),
        conf={"subject.name.strategy": record_subject_name_strategy},
    )
    data = await sync(theirs, {"id": 1}, SerializationContext(topic_name, MessageField.VALUE))
    mine = await Serializer(
        ours,
        json.dumps(schema),
        subject_name_strategy=naming.record_name_strategy,
        auto_register=False,
    ).serialize(topic_name, {"id": 1})
    assert mine == data
    assert full_name in await ours.subjects()


async def test_json_schema_registered_by_confluent_client_decodes_with_ours(
    confluent: ConfluentClient, ours: SchemaRegistryClient, topic_name: str
) -> None:
    doc = {
        "type": "object",
        "title": f"T{uuid.uuid4().hex}",
        "properties": {"n": {"type": "integer"}},
    }
    schema_id = await sync(
        confluent.register_schema, f"{topic_name}-value", CSchema(json.dumps(doc), "JSON")
    )
    got = await sync(confluent.get_schema, schema_id)
    assert got.schema_type == "JSON"
    # Confluent's JSON serializer writes frame + JSON text: decode that with ours
    data = frame(schema_id, b'{"n": 5}')
    assert await Deserializer(ours, validate=True).deserialize(data) == {"n": 5}
