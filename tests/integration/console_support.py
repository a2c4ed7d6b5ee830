"""Helpers the console's tests share (no tests here): the service's app with the
console on the real broker and database, a login, schemas to browse (dead letters:
tests/integration/dlq_support.py)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from eventpipe.db.pool import open_pool
from eventpipe.schema_registry.models import Schema
from eventpipe.schema_registry.registry import SchemaRegistry
from eventpipe.service.app import build_app
from eventpipe.service.context import open_context
from eventpipe.settings import Settings
from tests.helpers import ServiceTestServer

ADMIN_TOKEN = "console-admin-token-7c1f9e"
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_settings(
    settings: Settings, *, token: str | None = ADMIN_TOKEN, **console: Any
) -> Settings:
    service = settings.service.model_copy(
        update={
            "admin_token": SecretStr(token) if token else None,
            "console": settings.service.console.model_copy(update=console),
        }
    )
    return settings.model_copy(update={"service": service})


@contextlib.asynccontextmanager
async def console_client(settings: Settings) -> AsyncIterator[TestClient]:
    ctx = await open_context(settings, broker_wait_s=5)
    client = TestClient(ServiceTestServer(build_app(ctx), settings.service))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await ctx.close()


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def login(client: TestClient, who: str = "ada", token: str = ADMIN_TOKEN) -> ClientResponse:
    page = await client.get("/console/login", headers=HTML)
    assert page.status == 200
    csrf = csrf_of(await page.text())
    return await client.post(
        "/console/login",
        data={"who": who, "token": token, "csrf": csrf, "next": "/console/dlq"},
        headers=HTML,
        allow_redirects=False,
    )


async def page_csrf(client: TestClient, path: str) -> str:
    r = await client.get(path, headers=HTML)
    assert r.status == 200, (r.status, await r.text())
    return csrf_of(await r.text())


async def register_schemas(settings: Settings, subject: str, *schemas: dict[str, Any]) -> None:
    """``schemas`` registered under ``subject`` in eventpipe's registry, in order."""
    pool = await open_pool(settings.database)
    try:
        registry = SchemaRegistry(pool)
        for schema in schemas:
            await registry.register(subject, Schema(json.dumps(schema)))
    finally:
        await pool.close()
