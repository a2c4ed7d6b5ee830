"""The console as a sub-application of the service at ``/console/``: its pages,
its static files, the access checks of every request, and ``/`` leading to it."""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from eventpipe.console import (
    activity_page,
    dlq_pages,
    login_pages,
    schema_pages,
    status_pages,
    trace_page,
)
from eventpipe.console.access import Handler, guard, public, route
from eventpipe.console.redact import Redactor
from eventpipe.console.session import Keys
from eventpipe.console.state import CONSOLE, Console
from eventpipe.console.status_source import StatusSource
from eventpipe.route_docs import RouteDoc
from eventpipe.schema_registry.registry import SchemaRegistry
from eventpipe.service.workers.slot import WorkerSlot
from eventpipe.status_board import StatusBoard

if TYPE_CHECKING:
    from eventpipe.context import Context

log = logging.getLogger(__name__)
PREFIX = "/console/"
_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Name -> (bytes, content type) of eventpipe/console/static, read once."""
    out: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("eventpipe.console").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in _TYPES:
            out[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return out


def _static_handler() -> Handler:
    files = _static_files()

    @public
    async def static(request: web.Request) -> web.StreamResponse:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(
            body=body, content_type=content_type, headers={"Cache-Control": "max-age=300"}
        )

    return static


async def _to_console(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": PREFIX})


ROUTES = (
    RouteDoc("GET", "/", "redirects to /console/ (when the console is on)"),
    RouteDoc("GET", "/console", "redirects to /console/"),
    route("GET", "/static/{name}", "the console's CSS, script and images", "public"),
    *status_pages.ROUTES,
    *login_pages.ROUTES,
    *dlq_pages.ROUTES,
    *schema_pages.ROUTES,
    *activity_page.ROUTES,
    *trace_page.ROUTES,
)
"""Every route the console serves (``service.console.enabled``)."""


def build_console_app(
    ctx: Context, board: StatusBoard | None = None, slot: WorkerSlot | None = None
) -> web.Application:
    """``slot``: set in a worker of ``eventpipe run --workers N`` (the status pages
    then show every worker's components, read from the supervisor)."""
    settings = ctx.settings
    token = settings.service.admin_token
    board = board if board is not None else StatusBoard([])
    console = Console(
        ctx,
        Keys(token.get_secret_value() if token else None, settings.service.console.session_ttl_s),
        Redactor.from_settings(settings),
        SchemaRegistry(lambda: ctx.pool),
        board,
        StatusSource(board, slot, settings),
    )
    app = web.Application(middlewares=[guard])
    app[CONSOLE] = console
    app.router.add_get("/static/{name}", _static_handler(), name="console.static")
    for pages in (status_pages, login_pages, dlq_pages, schema_pages, activity_page, trace_page):
        pages.add_routes(app)
    return app


def install(app: web.Application, ctx: Context, board: StatusBoard | None = None) -> None:
    """Serve the console under ``/console/`` (unless ``service.console.enabled`` is
    off), and send ``/`` and ``/console`` there.  ``board``: the components of the
    process (the overview and the pipeline pages show them; in a worker of
    ``eventpipe run --workers N``, every worker's, from the supervisor)."""
    if not ctx.settings.service.console.enabled:
        return
    app.router.add_get("/", _to_console, name="console.root")
    # before the sub-application, which would take /console for its own
    app.router.add_get("/console", _to_console, name="console.bare")
    app.add_subapp(PREFIX, build_console_app(ctx, board, WorkerSlot.from_env()))
    if ctx.settings.service.admin_token is None:
        log.info("console at %s: no service.admin_token, so nobody can log in", PREFIX)
