"""The status of a running service, against the real broker and database: a signed
webhook into a pipeline into a table, and a second pipeline waiting for its schema
subject.  ``GET /v1/status`` (bearer token, or the console's public_read),
``/v1/status/history``, ``/readyz?component=``, ``eventpipe status`` (table, JSON,
exit 0 / 1 / 2), the console's overview and pipeline pages, and a pipelines worker
(ops-only app) answering the status too."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from eventpipe.cli.main import main
from eventpipe.embedded.process import free_port
from eventpipe.service.runner import Service
from eventpipe.settings import Settings
from tests.helpers import SERVICE_ENV
from tests.integration.console_support import ADMIN_TOKEN, demo_settings, demo_table, post_order
from tests.integration.test_pipeline_support import ident, running, wait_rows, with_pipelines

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
pytestmark = pytest.mark.timeout(300)


def _settings(settings: Settings, name: str, **console: Any) -> Settings:
    """The README's demo (pipeline ``<name>-to-postgres``), and a second pipeline on
    its topic that waits for a schema subject nobody registered."""
    s = demo_settings(settings, name, **console)
    waiting = {
        "name": f"{name}-checked",
        "source": {"topics": [f"{name}.orders"]},
        "validate_input": {"subject": f"{name}-missing-value"},
        "sinks": [{"topic": {"topic": f"{name}.checked"}}],
    }
    return with_pipelines(s, *s.pipelines, waiting)


def _order(i: int, total: Any) -> dict[str, Any]:
    return {"id": f"o-{i}", "customer": "c-1", "status": "created", "total": total}


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status, await r.json()


async def _cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))  # main() runs its own loop


def _by_check(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in snap["components"]}


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[tuple[Service, str]]:
    name = ident("st")
    await demo_table(settings, name)
    async with running(_settings(settings, name), "all") as svc:
        yield svc, name


async def test_status_api_readiness_scopes_and_history(service: tuple[Service, str]) -> None:
    svc, name = service
    rows, waiting, hook = (
        f"pipeline:{name}-to-postgres",
        f"pipeline:{name}-checked",
        f"source:{name}",
    )
    code, body = await _get(f"{svc.url}/v1/status")
    assert code == 401 and "Bearer" in body["detail"], body
    assert await post_order(svc.url, name, _order(1, 10)) == 200
    assert await post_order(svc.url, name, _order(2, 20)) == 200
    url = svc.settings.database.url.get_secret_value()
    assert await wait_rows(url, f"select count(*) from {name}", 2, timeout=90) == 2

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:  # the counters follow the records (marked once per batch)
        code, snap = await _get(f"{svc.url}/v1/status", AUTH)
        assert code == 200, snap
        got = _by_check(snap)
        if (got[rows]["total_out"] == 2 and got[rows]["lag"]) or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert list(got) == [hook, rows, waiting]
    assert snap["ok"] is False and snap["attention"] == [waiting]
    assert (got[hook]["state"], got[hook]["total_out"]) == ("running", 2)
    p = got[rows]
    assert (p["state"], p["total_in"], p["total_out"], p["attention"]) == ("running", 2, 2, False)
    assert p["lag_total"] == sum(p["lag"].values()) and all(k.startswith(name) for k in p["lag"])
    [sink] = p["children"]
    assert (sink["type"], sink["total_out"], sink["details"]["circuit"]) == (
        "postgres",
        2,
        "closed",
    )
    w = got[waiting]
    assert w["state"] == "waiting" and f"{name}-missing-value" in w["health"]
    assert w["details"]["waiting_for"][0]["subject"] == f"{name}-missing-value"

    code, one = await _get(f"{svc.url}/v1/status?component={rows}", AUTH)
    assert code == 200 and [c["check"] for c in one["components"]] == [rows] and one["ok"]
    code, problem = await _get(f"{svc.url}/v1/status?component=pipeline:nope", AUTH)
    assert code == 404 and problem["errors"][0]["field"] == "component"
    assert rows in problem["detail"]

    code, hist = await _get(f"{svc.url}/v1/status/history", AUTH)
    assert code == 200 and hist["interval_s"] == 10 and hist["points"] == 360
    assert set(hist["components"]) == {hook, rows, waiting}
    assert len(hist["components"][rows]["rate_in"]) >= 1

    code, ready = await _get(f"{svc.url}/readyz")
    assert code == 503 and ready["checks"][waiting].startswith("waiting for subject")
    code, ready = await _get(f"{svc.url}/readyz?component={rows},{hook}&component=broker")
    assert code == 200 and set(ready["checks"]) == {rows, hook, "broker"}, ready
    code, problem = await _get(f"{svc.url}/readyz?component=pipeline:nope")
    assert code == 404 and "broker" in problem["detail"]


async def test_status_command_exit_status_table_json_and_fixes(
    service: tuple[Service, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    svc, name = service
    rows, waiting = f"pipeline:{name}-to-postgres", f"pipeline:{name}-checked"
    for var in SERVICE_ENV:
        monkeypatch.delenv(var, raising=False)
    cfg = tmp_path / "eventpipe.yaml"
    cfg.write_text(yaml.safe_dump({"service": {"port": svc.port, "admin_token": ADMIN_TOKEN}}))

    # -c FILE: the service's port and token from the config; one pipeline waits: exit 1
    assert await _cli("status", "-c", str(cfg)) == 1
    out = capsys.readouterr().out
    assert rows in out and waiting in out and "waits for subject" in out
    assert f"needs attention: {waiting}" in out

    # --url, the token from the environment, one component, as JSON: exit 0
    monkeypatch.setenv("EVENTPIPE_SERVICE_ADMIN_TOKEN", ADMIN_TOKEN)
    assert await _cli("status", "--url", svc.url, "--component", rows, "--json") == 0
    snap = json.loads(capsys.readouterr().out)
    assert [c["check"] for c in snap["components"]] == [rows]

    assert await _cli("status", "--url", svc.url, "--component", "pipeline:nope") == 2
    assert "--component" in capsys.readouterr().err

    # what cannot be asked: exit 2, and the message names the fix
    monkeypatch.setenv("EVENTPIPE_SERVICE_ADMIN_TOKEN", "not-the-token")
    assert await _cli("status", "--url", svc.url) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "EVENTPIPE_SERVICE_ADMIN_TOKEN" in err
    assert await _cli("status", "--url", f"http://127.0.0.1:{free_port()}") == 2
    err = capsys.readouterr().err
    assert "cannot reach eventpipe" in err and "--url" in err


async def test_console_overview_and_pipeline_pages(
    settings: Settings, service: tuple[Service, str]
) -> None:
    svc, name = service
    # a bad order: the table refuses it, the sink notes the error, it is dead-lettered
    assert await post_order(svc.url, name, _order(9, "many")) == 200
    comp = next(c for c in svc.components if c.check_name == f"pipeline:{name}-to-postgres")
    for _ in range(300):
        if comp.status().dead_letters.get("sink"):
            break
        await asyncio.sleep(0.2)
    jar = aiohttp.CookieJar(unsafe=True)  # cookies from 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        r = await http.get(f"{svc.url}/console/api/status", allow_redirects=False)
        assert r.status == 401  # reading needs a login (public_read is off)
        page = await (await http.get(f"{svc.url}/console/login")).text()
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await http.post(
            f"{svc.url}/console/login",
            data={"who": "ada", "token": ADMIN_TOKEN, "csrf": csrf, "next": "/console/"},
        )
        assert r.status == 200 and str(r.url).endswith("/console/")
        html = await r.text()
        assert 'id="components"' in html and f"/console/pipelines/{name}-to-postgres" in html
        assert f'data-check="pipeline:{name}-checked"' in html and "waiting" in html
        assert "Needs attention" in html and 'data-spark="rate_in"' in html
        assert f"waits for subject {name}-missing-value (latest)" in html

        r = await http.get(f"{svc.url}/console/pipelines/{name}-to-postgres")
        html = await r.text()
        assert r.status == 200
        assert 'id="sinks"' in html and "postgres" in html and 'data-field="circuit"' in html
        assert 'id="steps"' in html and "jq: &#39;{id: .id, customer: .customer" in html
        assert f"/console/dlq?pipeline={name}-to-postgres" in html
        assert 'id="recent-errors"' in html and "RowRejectedError" in html
        assert '<span class="muted" data-field="dead_by_stage">sink 1</span>' in html
        r = await http.get(f"{svc.url}/console/pipelines/{name}-checked")
        html = await r.text()
        assert "not registered yet" in html and f"{name}-missing-value" in html
        r = await http.get(f"{svc.url}/console/pipelines/nope", headers={"Accept": "text/html"})
        assert r.status == 404 and f"{name}-to-postgres" in await r.text()

        snap = await (await http.get(f"{svc.url}/console/api/status")).json()
        assert len(snap["components"]) == 3
        hist = await (await http.get(f"{svc.url}/console/api/status/history")).json()
        assert f"pipeline:{name}-to-postgres" in hist["components"]
        js = await http.get(f"{svc.url}/console/static/status.js")
        assert js.status == 200 and "data-spark" in await js.text()


async def test_public_read_opens_the_status_and_a_pipelines_worker_serves_it(
    settings: Settings,
) -> None:
    name = ident("st")
    s = _settings(settings, name, public_read=True)
    s = s.model_copy(update={"sources": [], "pipelines": s.pipelines[1:]})  # the waiting one
    async with running(s, "pipelines") as svc:
        code, snap = await _get(f"{svc.url}/v1/status")  # no token needed
        assert code == 200 and [c["check"] for c in snap["components"]] == [
            f"pipeline:{name}-checked"
        ]
        code, _ = await _get(f"{svc.url}/v1/status/history")
        assert code == 200
        async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/console/") as r:
            assert r.status == 404  # a worker serves the ops endpoints only
