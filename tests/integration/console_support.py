"""Helpers the console's tests share (no tests here): the service's app with the
console on the real broker and database, a login, schemas to browse, the README's
demo (a signed webhook -> topic -> pipeline -> table) and orders for it (dead
letters: tests/integration/dlq_support.py)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from eventpipe.db.pool import open_pool
from eventpipe.schema_registry.models import Schema
from eventpipe.schema_registry.registry import SchemaRegistry
from eventpipe.service.app import build_app
from eventpipe.service.config import service_config
from eventpipe.service.context import open_context
from eventpipe.settings import Settings, TopicSpec
from tests.helpers import ServiceTestServer
from tests.integration.test_pipeline_support import sql, with_pipelines

ADMIN_TOKEN = "console-admin-token-7c1f9e"
DEMO_SECRET = "browser-test-webhook-secret"
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


def demo_settings(settings: Settings, name: str, **console: Any) -> Settings:
    """The README's demo: a signed webhook -> topic ``<name>.orders`` -> pipeline
    ``<name>-to-postgres`` -> table ``name`` (:func:`demo_table`); the console's
    settings ``console`` (with :data:`ADMIN_TOKEN`)."""
    topic = f"{name}.orders"
    source = {
        "type": "webhook",
        "name": name,
        "topic": topic,
        "verify": {"scheme": "hmac", "header": "x-signature", "secrets": [DEMO_SECRET]},
        "event": {
            "type": '"shop.order." + .body.status',
            "subject": ".body.id",
            "partitionkey": ".body.customer",
        },
    }
    pipeline = {
        "name": f"{name}-to-postgres",
        "source": {"topics": [topic], "group": f"{name}-to-postgres"},
        "steps": [
            {"jq": "{id: .id, customer: .customer, total: .total}"},
            {"filter": ".data.total > 0"},
        ],
        "sinks": [
            {
                "postgres": {
                    "table": name,
                    "mode": "upsert",
                    "key": ["id"],
                    "columns": {
                        "id": ".data.id",
                        "customer": ".data.customer",
                        "total": ".data.total",
                    },
                }
            }
        ],
        "dead_letter": {"topic": f"{name}-to-postgres.dlq"},
    }
    s = with_pipelines(console_settings(settings, **console), pipeline)
    s = s.model_copy(update={"sources": [source], "topics": [TopicSpec(name=topic, partitions=1)]})
    service_config(s)  # the demo's config is valid (raises with every problem)
    return s


async def demo_table(settings: Settings, name: str) -> None:
    await sql(
        settings.database.url.get_secret_value(),
        f"create table {name} (id text primary key, customer text not null, "
        "total numeric not null)",
    )


async def post_order(base: str, name: str, order: dict[str, Any]) -> int:
    """POST ``order`` to the demo's webhook, signed; the answer's status."""
    body = json.dumps(order).encode()
    sig = hmac.new(DEMO_SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with aiohttp.ClientSession() as http:
        r = await http.post(
            f"{base}/webhooks/{name}",
            data=body,
            headers={"x-signature": sig, "content-type": "application/json"},
        )
        return r.status
