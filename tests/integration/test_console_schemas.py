"""The console's schema registry pages over HTTP, against the real PostgreSQL:
subjects, versions, a diff of two versions, and a compatibility check of a pasted
schema that registers nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from eventpipe.db.pool import open_pool
from eventpipe.schema_registry.registry import SchemaRegistry
from eventpipe.settings import Settings
from tests.integration.console_support import (
    HTML,
    console_client,
    console_settings,
    login,
    page_csrf,
    register_schemas,
)

V1 = {
    "type": "record",
    "name": "Order",
    "fields": [{"name": "id", "type": "string"}, {"name": "total", "type": "double"}],
}
V2 = {**V1, "fields": [*V1["fields"], {"name": "note", "type": "string", "default": ""}]}
# a field without a default: BACKWARD-incompatible (new readers cannot read old data)
BREAKS = {**V1, "fields": [*V1["fields"], {"name": "region", "type": "string"}]}


@pytest.fixture
async def subject(settings: Settings) -> str:
    name = f"orders-{uuid.uuid4().hex[:8]}-value"
    await register_schemas(settings, name, V1, V2)
    return name


async def _versions(settings: Settings, subject: str) -> list[int]:
    pool = await open_pool(settings.database)
    try:
        return await SchemaRegistry(pool).versions(subject, deleted=True)
    finally:
        await pool.close()


async def _text(client: TestClient, path: str, **params: Any) -> tuple[int, str]:
    r = await client.get(path, params=params or None, headers=HTML)
    return r.status, await r.text()


async def test_subjects_versions_and_diff(settings: Settings, subject: str) -> None:
    async with console_client(console_settings(settings, public_read=True)) as client:
        status, body = await _text(client, "/console/schemas")
        assert status == 200 and f'href="/console/schemas/{subject}"' in body

        status, body = await _text(client, f"/console/schemas/{subject}")
        assert status == 200
        assert f'href="/console/schemas/{subject}?version=1"' in body
        assert "&#34;note&#34;" in body  # the latest version is shown
        assert 'id="level">BACKWARD' in body
        status, body = await _text(client, f"/console/schemas/{subject}", version="1")
        assert status == 200 and "&#34;note&#34;" not in body

        status, body = await _text(client, f"/console/schemas/{subject}/diff", a="1", b="2")
        assert status == 200 and 'id="schema-diff"' in body
        added = [line for line in body.splitlines() if line.startswith('<span class="add">')]
        assert any("note" in line for line in added)
        assert not any(line.startswith('<span class="del">') for line in body.splitlines())

        for params, field, code in (
            ({"a": "9", "b": "2"}, "a", 404),
            ({"a": "1", "b": "x"}, "b", 422),
            ({"b": "2"}, "a", 400),
        ):
            status, body = await _text(client, f"/console/schemas/{subject}/diff", **params)
            assert status == code, (params, status)
            assert "error" in body and field in body


async def test_unknown_subject_is_a_clear_404(settings: Settings) -> None:
    async with console_client(console_settings(settings, public_read=True)) as client:
        status, body = await _text(client, "/console/schemas/no-such-subject-value")
        assert status == 404 and "Subject &#39;no-such-subject-value&#39; not found" in body
        r = await client.get("/console/schemas/no-such-subject-value", headers={"Accept": "*/*"})
        assert (
            r.status == 404 and (await r.json())["type"] == "urn:eventpipe:problem:schema-registry"
        )


async def test_compatibility_check_registers_nothing(settings: Settings, subject: str) -> None:
    path = f"/console/schemas/{subject}/check"
    async with console_client(console_settings(settings, public_read=True)) as client:
        # read-only: no login needed, but the anonymous visitor's CSRF token is
        csrf = await page_csrf(client, f"/console/schemas/{subject}")
        r = await client.post(path, data={"schema": json.dumps(V1)}, headers=HTML)
        assert r.status == 403

        async def check(schema: str, **form: str) -> tuple[int, str]:
            r = await client.post(
                path, data={"csrf": csrf, "schema": schema, "schema_type": "AVRO", **form}
            )
            return r.status, await r.text()

        status, body = await check(json.dumps({**V2, "doc": "same fields"}))
        assert status == 200 and "<strong>Compatible</strong>" in body
        status, body = await check(json.dumps(BREAKS))
        assert status == 200 and "<strong>Not compatible</strong>" in body
        assert "region" in body and "{oldSchemaVersion: 2}" in body
        # against version 1 named: the same verdict, said against it
        status, body = await check(json.dumps(BREAKS), version="1")
        assert status == 200 and "Not compatible</strong> with version 1" in body

        for schema, form, code, words in (
            ("", {}, 400, "paste the schema"),
            ("{not json", {}, 422, "Invalid"),
            (json.dumps(V1), {"schema_type": "PROTOBUF"}, 400, "schema_type"),
            (json.dumps(V1), {"version": "7"}, 404, "Version 7 not found"),
        ):
            status, body = await check(schema, **form)
            assert status == code, (schema, form, status)
            assert 'id="problem"' in body and words in body
    assert await _versions(settings, subject) == [1, 2]

    # without public_read the pages ask for a login, and work after it
    async with console_client(console_settings(settings)) as client:
        r = await client.get(f"/console/schemas/{subject}", headers=HTML, allow_redirects=False)
        assert r.status == 303
        await login(client)
        status, _ = await _text(client, f"/console/schemas/{subject}")
        assert status == 200
