"""The console's front page, the **overview** (``/console/``): every component of
the process serving the console (under ``eventpipe run --workers N``, of every
worker, each marked with its worker: :mod:`.status_source`) with its state, rates,
lag, dead letters and last error, and the last hour of its rates and lag as small
charts; and a **pipeline page** (``/console/pipelines/{name}``): its steps, its
sinks with their circuits, its lag by partition, its schemas and its recent errors
(in each worker).

Both are rendered on the server (charts included, as inline SVG) and read
without JavaScript; ``static/status.js`` polls ``/console/api/status`` (the
snapshot ``GET /v1/status`` answers) every few seconds and
``/console/api/status/history`` less often, and updates them in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import yaml
from aiohttp import web

from eventpipe.console.access import route
from eventpipe.console.render import error, render
from eventpipe.console.state import console_of
from eventpipe.pipelines.component import PipelineComponent
from eventpipe.status_board import StatusBoard, facts

log = logging.getLogger(__name__)
RECENT_SHOWN = 20


def _board(request: web.Request) -> StatusBoard:
    return console_of(request).board


def _shown(request: web.Request, snap: dict[str, Any]) -> dict[str, Any]:
    """``snap`` with each component's facts, secrets cut out."""
    for entry in snap["components"]:  # the same words on the page and in its updates
        for part in (entry, *entry["children"]):
            part["facts"] = facts(part)
    return console_of(request).redactor.doc(snap)


def _charts(history: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    """A snapshot entry -> its series in ``history`` (a process's, or every
    worker's: ``workers``, index -> that worker's)."""
    by: dict[tuple[int | None, str], Any] = {
        (None, check): series for check, series in (history.get("components") or {}).items()
    }
    for worker, h in (history.get("workers") or {}).items():
        for check, series in (h.get("components") or {}).items():
            by[(int(worker), check)] = series
    return lambda entry: by.get((entry.get("worker"), entry["check"]))


async def _status_and_history(
    request: web.Request, check: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    source = console_of(request).status
    snap, history = await asyncio.gather(source.status(check), source.history(check))
    return _shown(request, snap), history


async def overview(request: web.Request) -> web.Response:
    snap, history = await _status_and_history(request)
    return render(
        request,
        "overview.html",
        snap=snap,
        chart=_charts(history),
        note=snap.get("note"),
        interval_s=_board(request).interval_s,
    )


def _errors(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recent errors of a pipeline and its sinks (in every worker), newest first."""
    found: list[dict[str, Any]] = []
    for entry in entries:
        worker = f"worker {entry['worker']}: " if "worker" in entry else ""
        found.extend({**e, "where": f"{worker}pipeline"} for e in entry["recent_errors"])
        for child in entry["children"]:
            found.extend({**e, "where": worker + child["name"]} for e in child["recent_errors"])
    found.sort(key=lambda e: e["at"], reverse=True)
    return found[:RECENT_SHOWN]


def _steps_yaml(comp: PipelineComponent, request: web.Request) -> str:
    spec = comp.spec
    shown = {
        k: v
        for k, v in (
            ("validate_input", spec.validate_input),
            ("steps", spec.steps),
            ("validate_output", spec.validate_output),
        )
        if v
    }
    if not shown:
        return "# no steps: events go to the sinks as they are read"
    red = console_of(request).redactor.doc(shown)
    return yaml.safe_dump(red, sort_keys=False, allow_unicode=True, width=100).rstrip()


async def pipeline_page(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    board = _board(request)
    comp = board.find(f"pipeline:{name}")
    if not isinstance(comp, PipelineComponent):
        known = [c.name for c in board.components if isinstance(c, PipelineComponent)]
        return error(
            request,
            404,
            "not-found",
            f"no pipeline {name!r} runs in this process"
            + (f" (it runs: {', '.join(known)})" if known else " (it runs none)"),
            field="name",
        )
    snap, history = await _status_and_history(request, comp.check_name)
    entries = snap["components"]
    if not entries:  # no worker the supervisor knows runs it now: this one does
        snap = _shown(request, board.snapshot([comp]))
        entries = snap["components"]
    return render(
        request,
        "pipeline.html",
        entries=entries,
        name=comp.name,
        check=comp.check_name,
        spec=comp.spec,
        sinks_yaml=yaml.safe_dump(
            console_of(request).redactor.doc(list(comp.spec.sinks)), sort_keys=False
        ).rstrip(),
        steps_yaml=_steps_yaml(comp, request),
        errors=_errors(entries),
        chart=_charts(history),
        note=snap.get("note"),
        interval_s=board.interval_s,
    )


def _asked(request: web.Request) -> str | web.Response | None:
    """The check name ``?component=`` names (a check name or a name), None for
    every component, or the 404 to answer."""
    name = request.query.get("component") or None
    if name is None:
        return None
    only = _board(request).find(name)
    if only is None:
        return error(request, 404, "unknown-component", f"no component {name!r}", field="component")
    return only.check_name


async def status_api(request: web.Request) -> web.Response:
    """The snapshot of ``GET /v1/status`` (``?component=`` one check), under the
    console's login rules; every worker's under ``--workers``."""
    check = _asked(request)
    if isinstance(check, web.Response):
        return check
    return web.json_response(_shown(request, await console_of(request).status.status(check)))


async def history_api(request: web.Request) -> web.Response:
    check = _asked(request)
    if isinstance(check, web.Response):
        return check
    return web.json_response(await console_of(request).status.history(check))


ROUTES = (
    route("GET", "/", "the overview: every component's state, rates, lag and errors, live"),
    route(
        "GET",
        "/pipelines/{name}",
        "a pipeline: schemas, sinks and circuits, lag by partition, recent errors, steps",
    ),
    route(
        "GET",
        "/api/status",
        "the overview's numbers (what /v1/status answers; under `--workers`, the supervisor's)",
    ),
    route(
        "GET",
        "/api/status/history",
        "the overview's charts (what /v1/status/history answers; under `--workers`, the "
        "supervisor's)",
    ),
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview, name="console.index")
    app.router.add_get("/pipelines/{name}", pipeline_page, name="console.pipeline")
    app.router.add_get("/api/status", status_api, name="console.status_api")
    app.router.add_get("/api/status/history", history_api, name="console.history_api")
