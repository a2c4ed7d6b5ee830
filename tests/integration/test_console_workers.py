"""The console under ``eventpipe run --workers 2``: whichever worker takes the
connection, the overview, a pipeline's page and the status JSON they poll show
every worker's components (from the supervisor's merged status); a worker whose
supervisor does not answer shows its own, with a note saying so."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from eventpipe.embedded.process import free_port
from eventpipe.settings import Settings
from tests.integration.console_support import ADMIN_TOKEN, HTML, JSON, csrf_of
from tests.integration.test_run_workers import (
    ROOT,
    Tree,
    start,
    webhook_pipeline,
    webhook_table,
    webhook_tree,
)

ROUNDS = 8  # requests of each kind, each on a new connection (the kernel picks a worker)


@pytest.fixture
async def tree(settings: Settings, tmp_path: Path) -> AsyncIterator[Tree]:
    """Two workers; reading the console needs a login (no ``public_read``)."""
    service = {"admin_token": ADMIN_TOKEN, "console": {"public_read": False}}
    async with webhook_tree(settings, tmp_path, "cw", service) as t:
        yield t


def session() -> aiohttp.ClientSession:
    """A client that opens a new connection for every request and keeps cookies
    set by 127.0.0.1."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=20),
    )


async def log_in(http: aiohttp.ClientSession, base: str) -> None:
    async with http.get(base + "/console/login", headers=HTML) as r:
        assert r.status == 200
        csrf = csrf_of(await r.text())
    form = {"who": "ada", "token": ADMIN_TOKEN, "csrf": csrf, "next": "/console/"}
    async with http.post(
        base + "/console/login", data=form, headers=HTML, allow_redirects=False
    ) as r:
        assert r.status in (302, 303), await r.text()


async def get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], log: Path | None = None
) -> Any:
    async with http.get(url, headers=headers) as r:
        body = await r.text()
        assert r.status == 200, (url, r.status, body, tail(log))
        return body if headers is HTML else await r.json()


def tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-4000:] if log else ""


def rows(html: str, check: str) -> set[str]:
    """The workers whose row of component ``check`` the page shows."""
    return set(re.findall(rf'data-check="{re.escape(check)}" data-worker="(\d+)"', html))


async def test_every_page_shows_both_workers_components_whichever_worker_answers(
    tree: Tree,
) -> None:
    pipeline, source = f"pipeline:{tree.source}", f"source:{tree.source}"
    base = f"http://127.0.0.1:{tree.port}"
    async with session() as http:
        await log_in(http, base)
        for _ in range(ROUNDS):
            snap = await get(http, base + "/console/api/status", JSON)
            shown = {(c.get("worker"), c["check"]) for c in snap["components"]}
            assert shown >= {(0, pipeline), (1, pipeline), (0, source), (1, source)}, shown
            assert [w["worker"] for w in snap["workers"]] == [0, 1]
            assert "note" not in snap, snap["note"]
            assert all(isinstance(f, str) for c in snap["components"] for f in c["facts"])

            one = await get(http, base + f"/console/api/status?component={pipeline}", JSON)
            assert {(c["worker"], c["check"]) for c in one["components"]} == {
                (0, pipeline),
                (1, pipeline),
            }

            hist = await get(http, base + "/console/api/status/history", JSON)
            assert set(hist["workers"]) == {"0", "1"}, hist
            assert all(pipeline in h["components"] for h in hist["workers"].values()), hist

            page = await get(http, base + "/console/", HTML)
            assert rows(page, pipeline) == {"0", "1"}, page
            assert rows(page, source) == {"0", "1"}, page
            assert 'id="scope-note"' not in page
            assert "worker 0" in page and "worker 1" in page

            pipe = await get(http, base + f"/console/pipelines/{tree.source}", HTML)
            assert rows(pipe, pipeline) == {"0", "1"}, pipe

        # the partitions, shared between the workers, are all on one page (a
        # partition's lag is shown once its pipeline has read from it)
        answers = await asyncio.gather(*(tree.post(http, f"k{i}") for i in range(40)))
        assert answers == [200] * 40, answers
        deadline = time.monotonic() + 60
        while True:
            snap = await get(http, base + f"/console/api/status?component={pipeline}", JSON)
            lags = [c["lag"] for c in snap["components"]]
            if all(lags) and sum(len(lag) for lag in lags) == 4:
                break
            assert time.monotonic() < deadline, f"the 4 partitions not shown: {lags}"
            await asyncio.sleep(1)
        page = await get(http, base + f"/console/pipelines/{tree.source}", HTML)
        for p in range(4):
            assert f"<code>{tree.source}.in[{p}]</code>" in page, page


async def test_a_worker_whose_supervisor_does_not_answer_shows_its_own_with_a_note(
    settings: Settings, tmp_path: Path
) -> None:
    """A worker started as the supervisor starts one, told a supervisor URL where
    nothing listens: its pages show its components, say so and why, and never 500."""
    name = await webhook_table(settings, "cw")
    cfg = webhook_pipeline(name)
    port = free_port()
    cfg["service"] = {"port": port, "console": {"public_read": True}}
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ops = socket.socket()
    ops.bind(("127.0.0.1", 0))
    ops.listen(16)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = dict(
        os.environ,
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value(),
        PYTHONPATH=str(ROOT),
        EVENTPIPE_WORKER="1",
        EVENTPIPE_WORKER_OPS_FD=str(ops.fileno()),
        EVENTPIPE_WORKER_PARENT=str(os.getpid()),
        EVENTPIPE_WORKER_SUPERVISOR_URL=dead,
    )
    log = tmp_path / "worker.log"
    # as the supervisor starts a worker, its private ops socket passed on
    proc = start(["run", "-c", str(path), "--port", str(port)], env, log, (ops.fileno(),))
    base = f"http://127.0.0.1:{port}"
    try:
        async with session() as http:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, tail(log)
                try:
                    async with http.get(base + "/healthz") as r:
                        if r.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                assert time.monotonic() < deadline, tail(log)
                await asyncio.sleep(0.3)

            snap = await get(http, base + "/console/api/status", JSON)
            shown = {(c["worker"], c["check"]) for c in snap["components"]}
            assert shown == {(1, f"pipeline:{name}"), (1, f"source:{name}")}, shown
            assert "worker 1" in snap["note"] and dead in snap["note"], snap["note"]

            hist = await get(http, base + "/console/api/status/history", JSON)
            assert set(hist["workers"]) == {"1"}, hist
            assert "worker 1" in hist["note"]

            for url in ("/console/", f"/console/pipelines/{name}"):
                page = await get(http, base + url, HTML, log)
                note = re.search(r'<p id="scope-note"[^>]*>(.*?)</p>', page, re.S)
                assert note, page
                assert "Only worker 1" in note.group(1) and dead in note.group(1), note.group(1)
                assert rows(page, f"pipeline:{name}") == {"1"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 50)
        finally:
            if proc.poll() is None:
                proc.kill()
            ops.close()
