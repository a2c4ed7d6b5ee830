"""The console's front page, the **overview** (``/console/``): every component of
the process serving the console with its state, rates, lag, dead letters and last
error, and the last hour of its rates and lag as small charts; and a **pipeline
page** (``/console/pipelines/{name}``): its steps, its sinks with their circuits,
its lag by partition, its schemas and its recent errors.

Both are rendered on the server (charts included, as inline SVG) and read
without JavaScript; ``static/status.js`` polls ``/console/api/status`` (the
snapshot ``GET /v1/status`` answers) every few seconds and
``/console/api/status/history`` less often, and updates them in place.
"""

from __future__ import annotations

import logging
from typing import Any

import yaml
from aiohttp import web

from eventpipe.console.access import route
from eventpipe.console.render import error, render
from eventpipe.console.state import console_of
from eventpipe.pipelines.component import PipelineComponent
from eventpipe.plugin import Component
from eventpipe.status_board import StatusBoard, facts

log = logging.getLogger(__name__)
RECENT_SHOWN = 20


def _board(request: web.Request) -> StatusBoard:
    return console_of(request).board


def _snapshot(
    request: web.Request, board: StatusBoard, only: Component | None = None
) -> dict[str, Any]:
    """The board's snapshot (of ``only``, when given), secrets cut out."""
    snap = board.snapshot(None if only is None else [only])
    for entry in snap["components"]:  # the same words on the page and in its updates
        for part in (entry, *entry["children"]):
            part["facts"] = facts(part)
    return console_of(request).redactor.doc(snap)


async def overview(request: web.Request) -> web.Response:
    board = _board(request)
    snap = _snapshot(request, board)
    return render(
        request,
        "overview.html",
        snap=snap,
        history=board.history()["components"],
        interval_s=board.interval_s,
    )


def _errors(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The recent errors of a pipeline and its sinks, newest first."""
    found = [{**e, "where": "pipeline"} for e in entry["recent_errors"]]
    for child in entry["children"]:
        found.extend({**e, "where": child["name"]} for e in child["recent_errors"])
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
    snap = _snapshot(request, board, comp)
    [entry] = snap["components"]
    return render(
        request,
        "pipeline.html",
        entry=entry,
        spec=comp.spec,
        sinks_yaml=yaml.safe_dump(
            console_of(request).redactor.doc(list(comp.spec.sinks)), sort_keys=False
        ).rstrip(),
        steps_yaml=_steps_yaml(comp, request),
        errors=_errors(entry),
        history=board.history([comp.check_name])["components"].get(comp.check_name),
        interval_s=board.interval_s,
    )


async def status_api(request: web.Request) -> web.Response:
    """The snapshot of ``GET /v1/status`` (``?component=`` one check), under the
    console's login rules."""
    board = _board(request)
    name = request.query.get("component") or None
    only = None if name is None else board.find(name)
    if name is not None and only is None:
        return error(request, 404, "unknown-component", f"no component {name!r}", field="component")
    return web.json_response(_snapshot(request, board, only))


async def history_api(request: web.Request) -> web.Response:
    board = _board(request)
    only = request.query.get("component") or None
    return web.json_response(board.history(None if only is None else [only]))


ROUTES = (
    route("GET", "/", "the overview: every component's state, rates, lag and errors, live"),
    route(
        "GET",
        "/pipelines/{name}",
        "a pipeline: schemas, sinks and circuits, lag by partition, recent errors, steps",
    ),
    route("GET", "/api/status", "the overview's numbers (what /v1/status answers)"),
    route("GET", "/api/status/history", "the overview's charts (what /v1/status/history answers)"),
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview, name="console.index")
    app.router.add_get("/pipelines/{name}", pipeline_page, name="console.pipeline")
    app.router.add_get("/api/status", status_api, name="console.status_api")
    app.router.add_get("/api/status/history", history_api, name="console.history_api")
