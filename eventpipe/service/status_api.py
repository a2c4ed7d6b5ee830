"""``GET /v1/status`` and ``GET /v1/status/history``: every component of this
process (sources, pipelines and their sinks) as :class:`~eventpipe.status_board.StatusBoard`
shows it, and the last hour of each one's rates and lag.

Every role serves them (a pipelines or CDC worker too, beside ``/readyz``), so
``eventpipe status --url`` works against any process.  Reading them follows the
console's rule: open when ``service.console.public_read`` is on, else
``Authorization: Bearer <service.admin_token>``.  The configuration's secrets are
cut out of what they answer, as the console does.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from eventpipe.console.redact import Redactor
from eventpipe.problem import problem
from eventpipe.route_docs import ADMIN_TOKEN, RouteDoc
from eventpipe.service.publish_api import CTX
from eventpipe.settings import Settings
from eventpipe.status_board import StatusBoard

log = logging.getLogger(__name__)
BOARD = web.AppKey("status_board", StatusBoard)
REDACTOR = web.AppKey("status_redactor", Redactor)


AUTH = f"{ADMIN_TOKEN}, unless `service.console.public_read`"
ROUTES = (
    RouteDoc(
        "GET",
        "/v1/status",
        "every component of this process: state, events/s in and out, lag per partition, dead "
        "letters by stage, last and recent errors, details; `ok` and what needs attention; "
        "`?component=` narrows it",
        AUTH,
    ),
    RouteDoc(
        "GET",
        "/v1/status/history",
        "each component's events/s in and out and lag, every 10 s over the last hour "
        "(`?component=` narrows it)",
        AUTH,
    ),
)


def install(app: web.Application, settings: Settings, board: StatusBoard) -> None:
    """The routes, and the board's sampler running while the app runs."""
    app[BOARD] = board
    app[REDACTOR] = Redactor.from_settings(settings)
    app.router.add_get("/v1/status", status, name="status")
    app.router.add_get("/v1/status/history", history, name="status.history")

    async def start_sampling(_: web.Application) -> None:
        await board.start()

    async def stop_sampling(_: web.Application) -> None:
        await board.stop()

    app.on_startup.append(start_sampling)
    app.on_cleanup.append(stop_sampling)


def scope_of(request: web.Request, known: list[str]) -> set[str] | web.Response:
    """The names ``?component=`` gives (repeated, or comma-separated; every one of
    ``known`` when it gives none), or a 404 problem naming the known ones."""
    wanted = [
        name.strip()
        for value in request.query.getall("component", [])
        for name in value.split(",")
        if name.strip()
    ]
    if not wanted:
        return set(known)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        return problem(
            404,
            "unknown-component",
            f"no component named {unknown[0]!r} in this process; it has: {', '.join(known)}",
            field="component",
        )
    return set(wanted)


def refused(request: web.Request, settings: Settings) -> web.Response | None:
    """None when the request may read the status; else the problem to answer."""
    if settings.service.console.public_read:
        return None
    token = settings.service.admin_token
    if token is None:
        return problem(
            403,
            "status-closed",
            "the status API is closed: set service.console.public_read: true "
            "(EVENTPIPE_SERVICE_CONSOLE_PUBLIC_READ) to open it, or service.admin_token "
            "(EVENTPIPE_SERVICE_ADMIN_TOKEN) and send it as a bearer token",
        )
    given = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(given, f"Bearer {token.get_secret_value()}".encode()):
        return problem(
            401,
            "unauthorized",
            "send `Authorization: Bearer <service.admin_token>` (or set "
            "service.console.public_read: true)",
            headers={"WWW-Authenticate": 'Bearer realm="eventpipe-status"'},
        )
    return None


def _asked(request: web.Request) -> tuple[StatusBoard, set[str]] | web.Response:
    """The board and the checks the request may read and names; else the problem."""
    no = refused(request, request.app[CTX].settings)
    if no is not None:
        return no
    board = request.app[BOARD]
    scope = scope_of(request, [c.check_name for c in board.components])
    return scope if isinstance(scope, web.Response) else (board, scope)


async def status(request: web.Request) -> web.Response:
    asked = _asked(request)
    if isinstance(asked, web.Response):
        return asked
    board, scope = asked
    snap = board.snapshot(c for c in board.components if c.check_name in scope)
    return web.json_response(request.app[REDACTOR].doc(snap))


async def history(request: web.Request) -> web.Response:
    asked = _asked(request)
    if isinstance(asked, web.Response):
        return asked
    board, scope = asked
    return web.json_response(board.history(scope))
