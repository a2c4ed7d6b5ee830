"""Schemas without restarts, against the real registry (eventpipe's own, in
PostgreSQL) and broker: a pipeline whose subject is not registered yet starts
waiting for it (its status and /readyz say which subject) instead of refusing the
whole service, and runs once the subject is registered; a new version of a
subject pinned to ``latest`` is picked up by the running pipeline, without
restarting its faust app."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from eventpipe.envelope import CloudEvent
from eventpipe.pipelines.component import PipelineComponent
from eventpipe.publisher import Publisher
from eventpipe.schema_registry.models import Schema
from eventpipe.schema_registry.registry import SchemaRegistry
from eventpipe.service.runner import Service
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.test_pipeline_support import (
    dlq_headers,
    ident,
    running,
    sql,
    status_when,
    wait_rows,
    with_pipelines,
)

pytestmark = pytest.mark.timeout(300)


def _pipeline(name: str, subject: str, **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "validate_input": {"subject": subject},
        "sinks": [
            {
                "postgres": {
                    "table": name,
                    "mode": "upsert",
                    "key": ["id"],
                    "columns": {"id": ".data.id", "total": ".data.total"},
                }
            }
        ],
        **more,
    }


async def _register(settings: Settings, subject: str, schema: dict[str, Any]) -> None:
    from eventpipe.db.pool import open_pool

    pool = await open_pool(settings.database)
    try:
        await SchemaRegistry(pool).register(subject, Schema(orjson.dumps(schema).decode(), "JSON"))
    finally:
        await pool.close()


def _component(svc: Service) -> PipelineComponent:
    [comp] = [c for c in svc.components if isinstance(c, PipelineComponent)]
    return comp


async def _readyz(url: str, query: str = "") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz{query}") as r:
        return r.status, await r.json()


def _order(i: int, total: Any) -> CloudEvent:
    return CloudEvent.create("shop.order", "/shop", {"id": f"o-{i}", "total": total}, id=f"e-{i}")


async def test_a_missing_subject_waits_then_the_pipeline_runs_once_it_is_registered(
    settings: Settings,
) -> None:
    name = ident("wait")
    subject = f"{name}-value"
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (id text primary key, total numeric)")
    s = with_pipelines(settings, _pipeline(name, subject, schema_refresh="1s"))
    check = f"pipeline:{name}"
    async with running(s, "pipelines") as svc:  # the service starts: nothing refused
        comp = _component(svc)
        st = comp.status()
        assert st.state == "waiting", st
        assert [w["subject"] for w in st.details["waiting_for"]] == [subject]
        assert subject in comp.health()
        code, body = await _readyz(svc.url)
        assert code == 503 and subject in body["checks"][check], body
        code, body = await _readyz(svc.url, f"?component={check}")
        assert code == 503 and list(body["checks"]) == [check], body
        async with Publisher(s) as pub:  # an event sent while it waits is kept
            await pub.publish(name, _order(1, 10))

        await _register(settings, subject, {"type": "object", "required": ["id", "total"]})
        st = await status_when(comp, lambda st: st.state == "running", 60)
        assert st.state == "running", st
        assert await wait_rows(url, f"select count(*) from {name}", 1, timeout=90) == 1
        assert comp.health() == "ok"
        code, body = await _readyz(svc.url, f"?component={check}")
        assert code == 200 and body["checks"] == {check: "ok"}, body
    assert await sql(url, f"select id, total from {name}") == [("o-1", 10)]


async def test_a_new_latest_version_applies_without_a_restart(settings: Settings) -> None:
    name = ident("latest")
    subject = f"{name}-value"
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (id text primary key, total numeric)")
    v1 = {"type": "object", "required": ["id"], "properties": {"total": {"type": "integer"}}}
    v2 = {"type": "object", "required": ["id"], "properties": {"total": {"type": "number"}}}
    await _register(settings, subject, v1)
    s = with_pipelines(settings, _pipeline(name, subject, schema_refresh="1s"))
    async with running(s, "pipelines") as svc, Publisher(s) as pub:
        comp = _component(svc)
        st = await status_when(comp, lambda st: st.state == "running", 60)
        assert st.state == "running", st
        runtime = comp.runtime
        assert runtime is not None
        app = runtime.app
        assert [(x["subject"], x["version"]) for x in st.details["schemas"]] == [(subject, 1)]
        await pub.publish(name, _order(1, 4.5))  # not an integer: v1 refuses it
        [letter] = await read_records(s.kafka.bootstrap, f"{name}.dlq", 1, timeout=60)
        assert dlq_headers(letter)["eventpipe.dlq.stage"] == "validate"

        await _register(settings, subject, v2)
        st = await status_when(comp, lambda st: st.details["schemas"][0]["version"] == 2, 60)
        assert st.details["schemas"][0]["version"] == 2, st
        await pub.publish(name, _order(2, 4.5))  # valid under v2
        assert await wait_rows(url, f"select count(*) from {name}", 1, timeout=90) == 1
        # the same runtime and faust app: nothing was restarted
        assert comp.runtime is runtime and runtime.app is app
        assert st.state == "running"
    assert await sql(url, f"select id, total from {name}") == [("o-2", 4.5)]
    assert len(await read_records(s.kafka.bootstrap, f"{name}.dlq", 1, timeout=5)) == 1
