"""The supervisor's HTTP surface on ``service.ops_port``: ``/healthz``, ``/readyz``,
``/metrics``, ``/v1/status`` and ``/v1/status/history`` of all workers together
(the routes every process serves, :data:`eventpipe.service.app.OPS_ROUTES`).

Each answer is made from the running workers' answers on their private ports
(:mod:`.merge`); a worker that does not answer within :data:`ASK_TIMEOUT_S` counts
as not ready.  ``?component=`` is passed on to the workers.  The status routes
ask what a worker's do (:func:`eventpipe.service.status_api.refused`), and the
supervisor asks its workers with the config's admin token.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from eventpipe.service.status_api import refused

from .merge import MetricsMerger, exposition, merge_status, supervisor_families
from .supervisor import Supervisor, Worker

log = logging.getLogger(__name__)
ASK_TIMEOUT_S = 3.0
SUPERVISOR = web.AppKey("supervisor", Supervisor)
HTTP = web.AppKey("http", dict)  # "session": the client the workers are asked with
MERGER = web.AppKey("metrics_merger", MetricsMerger)
Answer = tuple[int, bytes]  # (status, body)


async def _ask(
    app: web.Application, w: Worker, path: str, query: Any
) -> tuple[int | None, Answer | None]:
    """(the pid that was asked, its answer), or (pid, None) when it did not answer."""
    pid = w.pid
    if pid is None or w.state != "running":
        return pid, None
    sup = app[SUPERVISOR]
    token = sup.settings.service.admin_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    try:
        async with app[HTTP]["session"].get(w.ops_url + path, params=query, headers=headers) as r:
            return pid, (r.status, await r.read())
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.debug("worker %d did not answer %s: %s", w.index, path, exc)
        return pid, None


async def _ask_all(request: web.Request, path: str) -> list[tuple[Worker, Answer | None]]:
    workers = request.app[SUPERVISOR].workers
    got = await asyncio.gather(*(_ask(request.app, w, path, request.query) for w in workers))
    return [(w, answer) for w, (_pid, answer) in zip(workers, got, strict=True)]


def _forwarded_problem(answers: list[tuple[Worker, Answer | None]]) -> web.Response | None:
    """A worker's 4xx problem (``?component=`` names nothing), answered as is."""
    for _w, answer in answers:
        if answer is not None and 400 <= answer[0] < 500:
            return web.Response(
                status=answer[0], body=answer[1], content_type="application/problem+json"
            )
    return None


def _json(answer: Answer | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    try:
        body = orjson.loads(answer[1])
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


async def healthz(request: web.Request) -> web.Response:
    workers = request.app[SUPERVISOR].workers
    return web.json_response({"status": "ok", "workers": {str(w.index): w.state for w in workers}})


async def readyz(request: web.Request) -> web.Response:
    """200 when every worker runs and answers its /readyz with 200; the checks of
    each, as ``worker<i>:<check>``."""
    answers = await _ask_all(request, "/readyz")
    problem = _forwarded_problem(answers)
    if problem is not None:
        return problem
    checks: dict[str, str] = {}
    workers: dict[str, str] = {}
    for w, answer in answers:
        body = _json(answer)
        if answer is None or body is None:
            workers[str(w.index)] = w.state if w.state != "running" else "not answering"
            continue
        workers[str(w.index)] = "ready" if answer[0] == 200 else "not ready"
        for name, value in (body.get("checks") or {}).items():
            checks[f"worker{w.index}:{name}"] = value
    ready = all(v == "ready" for v in workers.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "workers": workers, "checks": checks},
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    workers = app[SUPERVISOR].workers
    got = await asyncio.gather(*(_ask(app, w, "/metrics", {}) for w in workers))
    merger = app[MERGER]
    answered = []
    for w, (pid, answer) in zip(workers, got, strict=True):
        if pid is not None and answer is not None and answer[0] == 200:
            merger.observe(w.index, pid, answer[1].decode())
            answered.append(w.index)
    families = list(merger.merged(answered).values())
    families += supervisor_families(w.view() for w in workers)
    resp = web.Response(body=exposition(families))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def _statuses(
    request: web.Request, path: str
) -> list[tuple[Worker, dict[str, Any] | None]] | web.Response:
    """Each worker's answer to ``path`` (a status route), or the problem to answer."""
    no = refused(request, request.app[SUPERVISOR].settings)
    if no is not None:
        return no
    answers = await _ask_all(request, path)
    problem = _forwarded_problem(answers)
    return problem if problem is not None else [(w, _json(a)) for w, a in answers]


async def status(request: web.Request) -> web.Response:
    got = await _statuses(request, "/v1/status")
    if isinstance(got, web.Response):
        return got
    snaps = {w.index: body for w, body in got if body is not None}
    return web.json_response(merge_status([w.view() for w, _ in got], snaps, _now()))


async def history(request: web.Request) -> web.Response:
    got = await _statuses(request, "/v1/status/history")
    if isinstance(got, web.Response):
        return got
    return web.json_response({"workers": {str(w.index): b for w, b in got if b is not None}})


def build_ops_app(supervisor: Supervisor) -> web.Application:
    app = web.Application()
    app[SUPERVISOR] = supervisor
    app[MERGER] = MetricsMerger()
    app[HTTP] = {}
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_get("/v1/status", status, name="status")
    app.router.add_get("/v1/status/history", history, name="status.history")

    async def session(app: web.Application) -> Any:
        clients = app[HTTP]
        clients["session"] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)
        )
        yield
        await clients.pop("session").close()

    app.cleanup_ctx.append(session)
    return app
