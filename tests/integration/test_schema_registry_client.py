"""Our async client and serializers against the registry, mounted in the service
app and alone; errors, caching, the blocking resolver for config load."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from eventpipe.context import Context
from eventpipe.db.pool import open_pool
from eventpipe.errors import is_retriable
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import Publisher
from eventpipe.schema_registry.client import SchemaRegistryClient, schema_resolver
from eventpipe.schema_registry.errors import RegistryClientError, RegistryUnavailableError
from eventpipe.schema_registry.models import Schema
from eventpipe.schema_registry.naming import topic_record_name_strategy
from eventpipe.schema_registry.serde import Deserializer, Serializer
from eventpipe.schema_registry.server import build_registry_app
from eventpipe.schema_registry.wire import SerializationError, WireFormatError, frame
from eventpipe.service.app import build_app
from eventpipe.settings import Settings


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
async def client(registry_url: str) -> AsyncIterator[SchemaRegistryClient]:
    async with SchemaRegistryClient(registry_url) as c:
        yield c


@pytest.fixture
def subject() -> str:
    return f"cl-{uuid.uuid4().hex[:12]}-value"


def record(*fields: dict[str, Any], name: str | None = None) -> str:
    return json.dumps(
        {
            "type": "record",
            "name": name or f"R{uuid.uuid4().hex}",
            "namespace": "com.acme",
            "fields": list(fields) or [{"name": "id", "type": "long"}],
        }
    )


async def test_register_get_lookup_and_cache(client: SchemaRegistryClient, subject: str) -> None:
    text = record()
    schema_id = await client.register(subject, text)
    sent = client.requests
    assert await client.register(subject, text) == schema_id
    assert client.requests == sent  # cached: (subject, schema) -> id
    schema = await client.get_by_id(schema_id)
    assert client.requests == sent  # cached from the registration
    assert json.loads(schema.schema) == json.loads(text)
    latest = await client.get_latest(subject)
    assert (latest.subject, latest.version, latest.id) == (subject, 1, schema_id)
    found = await client.lookup(subject, text)
    assert (found.id, found.version) == (schema_id, 1)
    before = client.requests
    await client.lookup(subject, text)
    await client.get_version(subject, 1)
    assert client.requests == before  # both cached
    assert await client.versions(subject) == [1]
    assert subject in await client.subjects(prefix=subject[:10])
    assert await client.schema_versions(schema_id) == [(subject, 1)]


async def test_get_by_id_from_a_fresh_client_fetches_once(
    registry_url: str, client: SchemaRegistryClient, subject: str
) -> None:
    schema_id = await client.register(subject, json.dumps({"type": "string"}), "AVRO")
    async with SchemaRegistryClient(registry_url) as fresh:
        first = await fresh.get_by_id(schema_id)
        assert fresh.requests == 1
        assert await fresh.get_by_id(schema_id) == first
        assert fresh.requests == 1


async def test_errors_carry_status_and_code(client: SchemaRegistryClient, subject: str) -> None:
    with pytest.raises(RegistryClientError) as info:
        await client.get_latest(subject)
    assert (info.value.status, info.value.error_code) == (404, 40401)
    assert "not found" in info.value.message
    assert not is_retriable(info.value)
    with pytest.raises(RegistryClientError) as info:
        await client.register(subject, '{"type": "record", "name": "X"}')
    assert info.value.error_code == 42201
    assert "'fields'" in info.value.message
    await client.register(subject, record())
    with pytest.raises(RegistryClientError) as info:
        await client.get_version(subject, 5)
    assert info.value.error_code == 40402


async def test_unreachable_registry_is_retriable() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with SchemaRegistryClient(f"http://127.0.0.1:{port}", timeout_s=2) as c:
        with pytest.raises(RegistryUnavailableError) as info:
            await c.get_by_id(1)
    assert is_retriable(info.value)


async def test_compatibility_config_and_mode(client: SchemaRegistryClient, subject: str) -> None:
    name = f"C{uuid.uuid4().hex}"
    await client.register(subject, record({"name": "id", "type": "long"}, name=name))
    breaking = record({"name": "id", "type": "long"}, {"name": "x", "type": "int"}, name=name)
    result = await client.check_compatibility(subject, breaking)
    assert not result.is_compatible
    assert any("READER_FIELD_MISSING_DEFAULT_VALUE" in m for m in result.messages)
    assert (await client.check_compatibility(subject, breaking, version=None)).messages
    assert await client.get_compatibility(subject) in (
        "BACKWARD",
        "NONE",
        "FULL",
        "FORWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD_TRANSITIVE",
        "FULL_TRANSITIVE",
    )
    assert await client.set_compatibility("forward", subject) == "FORWARD"
    assert await client.get_compatibility(subject) == "FORWARD"
    assert (await client.check_compatibility(subject, breaking)).is_compatible
    assert await client.delete_compatibility(subject) == "FORWARD"
    assert await client.set_mode("READONLY", subject) == "READONLY"
    assert await client.get_mode(subject) == "READONLY"
    with pytest.raises(RegistryClientError) as info:
        await client.register(subject, record())
    assert info.value.error_code == 42205
    assert await client.set_mode("READWRITE", subject) == "READWRITE"
    assert await client.get_mode() == "READWRITE"
    assert set(await client.schema_types()) == {"AVRO", "JSON"}


async def test_deletes_forget_cached_registrations(
    client: SchemaRegistryClient, subject: str
) -> None:
    text = record()
    await client.register(subject, text)
    assert await client.delete_subject(subject) == [1]
    assert await client.delete_subject(subject, permanent=True) == [1]
    with pytest.raises(RegistryClientError):
        await client.lookup(subject, text)  # not answered from the cache
    await client.register(subject, text)
    assert await client.versions(subject) == [1]
    assert await client.delete_version(subject, "latest") == 1


async def test_avro_serde_round_trip_with_reader_schema(
    client: SchemaRegistryClient, subject: str
) -> None:
    name = f"O{uuid.uuid4().hex}"
    v1 = record({"name": "id", "type": "long"}, name=name)
    v2 = record(
        {"name": "id", "type": "long"},
        {"name": "note", "type": "string", "default": "-"},
        name=name,
    )
    topic = subject.removesuffix("-value")
    data = await Serializer(client, v1).serialize(topic, {"id": 5})
    assert await Deserializer(client).deserialize(data) == {"id": 5}
    decoded = await Deserializer(client, reader_schema=Schema(v2)).decode(data)
    assert decoded.value == {"id": 5, "note": "-"}
    with pytest.raises(SerializationError):
        await Serializer(client, v1).serialize(topic, {"id": "five"})


async def test_serializer_modes(client: SchemaRegistryClient, subject: str) -> None:
    topic = subject.removesuffix("-value")
    text = record()
    with pytest.raises(RegistryClientError) as info:  # not registered, no auto-register
        await Serializer(client, text, auto_register=False).serialize(topic, {"id": 1})
    assert info.value.error_code == 40401
    schema_id = await client.register(subject, text)
    data = await Serializer(client, record(), use_latest=True).serialize(topic, {"id": 1})
    assert data[:5] == frame(schema_id, b"")
    keyed = await Serializer(
        client, text, subject_name_strategy=topic_record_name_strategy
    ).serialize(topic, {"id": 2}, is_key=True)
    reg = await client.get_latest(
        f"{topic}-{json.loads(text)['namespace']}.{json.loads(text)['name']}"
    )
    assert keyed[:5] == frame(reg.id, b"")


async def test_json_serde_validates(client: SchemaRegistryClient, subject: str) -> None:
    topic = subject.removesuffix("-value")
    doc = json.dumps(
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "title": f"J{uuid.uuid4().hex}",
            "properties": {"n": {"type": "integer", "minimum": 0}},
            "required": ["n"],
        }
    )
    ser = Serializer(client, Schema(doc, "JSON"))
    data = await ser.serialize(topic, {"n": 3})
    assert data[5:] == b'{"n":3}'
    assert await Deserializer(client, validate=True).deserialize(data) == {"n": 3}
    with pytest.raises(SerializationError, match="minimum"):
        await ser.serialize(topic, {"n": -1})
    bad = data[:5] + b'{"n":-4}'
    assert await Deserializer(client).deserialize(bad) == {"n": -4}
    with pytest.raises(SerializationError):
        await Deserializer(client, validate=True).deserialize(bad)
    with pytest.raises(WireFormatError):
        await Deserializer(client).deserialize(b"\x07" + data[1:])


async def test_blocking_resolver_for_config_load(registry_url: str, subject: str) -> None:
    async with SchemaRegistryClient(registry_url) as c:
        await c.register(subject, '{"type": "object"}', "JSON")
    resolve = schema_resolver(registry_url)
    assert await asyncio.to_thread(resolve, subject, "latest") == ("JSON", '{"type":"object"}')
    assert await asyncio.to_thread(resolve, subject, 1) == ("JSON", '{"type":"object"}')
    with pytest.raises(RegistryClientError) as info:
        await asyncio.to_thread(resolve, subject + "-missing", "latest")
    assert info.value.error_code == 40401


async def test_service_mounts_the_registry(settings: Settings, subject: str) -> None:
    pool = await open_pool(settings.database)
    ctx = Context(settings, Publisher(settings), TopicAdmin(settings.kafka), pool)
    server = TestServer(build_app(ctx), host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("/schema-registry")).rstrip("/")
        async with SchemaRegistryClient(base) as c:
            schema_id = await c.register(subject, record())
            assert (await c.get_latest(subject)).id == schema_id
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/no/such/thing") as resp:
                assert resp.status == 404
                assert (await resp.json(content_type=None))["error_code"] == 404
            async with http.get(str(server.make_url("/no/such/thing"))) as resp:
                assert resp.content_type == "application/problem+json"
    finally:
        await server.close()
        await pool.close()


async def test_subject_names_with_slashes_and_spaces(client: SchemaRegistryClient) -> None:
    subject = f"team a/orders {uuid.uuid4().hex[:6]}"
    schema_id = await client.register(subject, record())
    assert subject in await client.subjects()
    assert (await client.get_latest(subject)).subject == subject
    assert (await client.lookup(subject, (await client.get_by_id(schema_id)).schema)).id == (
        schema_id
    )
