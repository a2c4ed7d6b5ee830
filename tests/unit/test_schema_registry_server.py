"""Routes that need no database, and the error bodies when the database is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from eventpipe.schema_registry.server import build_registry_app

CT = "application/vnd.schemaregistry.v1+json"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_registry_app(lambda: None))) as c:
        yield c


async def test_schema_types_and_root(client: Client) -> None:
    resp = await client.get("/schemas/types")
    assert resp.status == 200 and resp.content_type == CT
    assert await resp.json(content_type=CT) == ["JSON", "AVRO"]
    assert await (await client.get("/")).json(content_type=CT) == {}


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/subjects", 500, 50001),  # no database: Confluent's backend store error
        ("GET", "/nothing/here", 404, 404),
        ("PUT", "/schemas/types", 405, 405),
        ("POST", "/subjects/s/versions", 400, 400),  # body is not JSON
    ],
)
async def test_error_bodies(client: Client, method: str, path: str, status: int, code: int) -> None:
    resp = await client.request(method, path, data=b"{not json")
    assert resp.status == status
    body = await resp.json(content_type=CT)
    assert body["error_code"] == code
    assert body["message"]
