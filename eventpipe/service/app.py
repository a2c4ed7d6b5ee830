"""The aiohttp application: health, metrics, the publish API, the schema registry,
the DLQ admin API, and the routes the components offer (webhooks).  Every error
answer is RFC 9457 problem JSON."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from itertools import groupby
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventpipe import console, metrics
from eventpipe.connectors.webhook import source as webhook_source
from eventpipe.context import Context
from eventpipe.dlq import admin_api as dlq_admin_api
from eventpipe.errors import error_class_name
from eventpipe.http_body import (
    UnsupportedEncoding,
    content_coding,
    decodes_content_encoding,
    handler_decodes,
)
from eventpipe.plugin import Component, Route
from eventpipe.problem import problem
from eventpipe.route_docs import RouteDoc, under
from eventpipe.schema_registry import server as schema_registry_server
from eventpipe.service import publish_api, status_api
from eventpipe.service.publish_api import CTX
from eventpipe.service.status_api import scope_of
from eventpipe.status_board import StatusBoard
from eventpipe.trace import api as trace_api

log = logging.getLogger("eventpipe.service")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# prometheus-client's ``labels()`` normalises its arguments and takes a lock on every
# call (~6 us); the children for the few (route, method, status) combinations a
# service sees are looked up once.  Bounded: clients choose methods.
_MAX_CHILDREN = 4096
_requests: dict[tuple[str, str, int], Any] = {}
_seconds: dict[str, Any] = {}


def _observe(route: str, method: str, status: int, seconds: float) -> None:
    key = (route, method, status)
    counter = _requests.get(key)
    if counter is None:
        counter = metrics.HTTP_REQUESTS.labels(route=route, method=method, status=str(status))
        if len(_requests) < _MAX_CHILDREN:
            _requests[key] = counter
    counter.inc()
    hist = _seconds.get(route)
    if hist is None:
        hist = metrics.HTTP_SECONDS.labels(route=route)
        if len(_seconds) < _MAX_CHILDREN:
            _seconds[route] = hist
    hist.observe(seconds)


COMPONENTS = web.AppKey("components", list[Component])


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    info = request.match_info
    resource = info.route.resource
    route = info.route.name or (resource.canonical if resource is not None else "unmatched")
    status = 500
    try:
        refused = _compressed_body_refused(request, info)
        if refused is not None:
            status = refused.status
            return refused
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        if status == 404:
            return problem(404, "not-found", f"no route for {request.path}")
        if status == 405:
            return problem(405, "method-not-allowed", f"{request.method} is not allowed here")
        if status == 413:
            return problem(413, "body-too-large", "the request body is too large", field="body")
        raise
    except asyncio.CancelledError:
        status = 499
        raise
    except web.RequestPayloadError:  # broken chunked framing, read by a handler
        status = 400
        return problem(
            400, "malformed", "the body's framing is broken", field="body", reason="bad framing"
        )
    except Exception as exc:
        if isinstance(exc, ConnectionError) and _client_gone(request):
            status = 499  # the client went away mid-request: nobody reads an answer
            return web.Response(status=400)
        metrics.ERRORS.labels(error_class=error_class_name(exc)).inc()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "internal", "an internal error occurred; see the service log")
    finally:
        _observe(route, request.method, status, time.perf_counter() - started)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _compressed_body_refused(
    request: web.Request, info: web.UrlMappingMatchInfo
) -> web.Response | None:
    """415 for a compressed body on a route that does not decode one (the handler
    would read compressed bytes as the body), and for codings nobody decodes."""
    if not request.body_exists or info.http_exception is not None:
        return None
    try:
        coding = content_coding(request.headers)
    except UnsupportedEncoding as exc:
        if handler_decodes(info.handler):
            return None  # the handler answers it, in its own words
        return exc.response()
    if coding is None or handler_decodes(info.handler):
        return None
    return problem(
        415,
        "unsupported-content-encoding",
        "this route takes no compressed bodies; send it uncompressed",
        field="content-encoding",
        reason="not accepted on this route",
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The broker, the database, and each component's ``health()`` (the CDC stall
    alarm and a pipeline waiting for its schema subject among them): anything but
    "ok" makes it answer 503.  ``?component=pipeline:orders`` (repeated, or
    comma-separated) answers for those checks only."""
    ctx = request.app[CTX]
    components = request.app[COMPONENTS]
    scope = scope_of(request, ["broker", "database", *(c.check_name for c in components)])
    if isinstance(scope, web.Response):
        return scope
    checks: dict[str, str] = {}

    async def broker() -> None:
        await asyncio.wait_for(ctx.admin.list_topics(), 3)

    async def database() -> None:
        assert ctx.pool is not None
        async with asyncio.timeout(3), ctx.pool.connection() as conn:
            await conn.execute("select 1")

    for name, check in (("broker", broker), ("database", database)):
        if name not in scope:
            continue
        try:
            await check()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    for comp in components:
        if comp.check_name not in scope:
            continue
        try:
            checks[comp.check_name] = comp.health()
        except Exception as exc:
            checks[comp.check_name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


OPS_ROUTES = (
    RouteDoc("GET", "/healthz", "200 while the process answers"),
    RouteDoc(
        "GET",
        "/readyz",
        "200 when the broker, the database and every component are ready, else 503; each "
        "check by name; `?component=pipeline:orders` (repeated or comma-separated) answers "
        "for those only",
    ),
    RouteDoc("GET", "/metrics", "Prometheus metrics"),
    *status_api.ROUTES,
)
"""What every process serves, whatever its role."""


def documented_routes() -> tuple[RouteDoc, ...]:
    """Every route a service can serve, with what it does and what it asks of the
    caller (docs/reference.md; tests/unit/test_reference.py checks them against
    :func:`build_app`)."""
    return (
        *OPS_ROUTES,
        *publish_api.ROUTES,
        *under(schema_registry_server.PREFIX, schema_registry_server.ROUTES),
        *dlq_admin_api.ROUTES,
        *console.ROUTES,
        *webhook_source.ROUTES,
        *trace_api.ROUTES,
    )


def build_app(
    ctx: Context, *, ops_only: bool = False, components: Sequence[Component] = ()
) -> web.Application:
    """The service's HTTP app.  ``ops_only`` (processes whose role is not ingest)
    serves only /healthz, /readyz, /metrics and /v1/status, for orchestrators,
    Prometheus and ``eventpipe status``.  ``components``: their health is part of
    /readyz, their status of /v1/status, their routes are served."""
    app = web.Application(
        middlewares=[observe],
        # the publish API enforces service.max_body_bytes itself, with problem JSON
        client_max_size=ctx.settings.service.max_body_bytes + 1,
    )
    app[CTX] = ctx
    app[COMPONENTS] = list(components)
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics_endpoint, name="metrics")
    board = StatusBoard(components)
    status_api.install(app, ctx.settings, board)  # /v1/status, /v1/status/history
    if ops_only:
        return app
    publish_api.install(app)
    schema_registry_server.install(app, ctx)  # /schema-registry/
    dlq_admin_api.install(app, ctx)  # /v1/dlq/...
    trace_api.install(app, ctx)  # /v1/trace/{event_id}
    console.install(app, ctx, board)  # /console/ (and / redirects there)
    install_routes(app, [r for comp in components for r in comp.routes()])
    return app


def install_routes(app: web.Application, routes: Sequence[Route]) -> None:
    """Routes offered by components.  Those sharing method, path and name become
    one aiohttp route that picks the component by its ``match`` (a path parameter
    and its value); a value nobody serves is a 404."""

    def key(r: Route) -> tuple[str, str, str]:
        return (r.method, r.path, r.name or "")

    for (method, path, name), group in groupby(sorted(routes, key=key), key=key):
        found = list(group)
        if len(found) == 1 and found[0].match is None:
            app.router.add_route(method, path, found[0].handler, name=name or None)
            continue
        if any(r.match is None for r in found):
            raise ValueError(f"{method} {path}: several components serve it unmatched")
        app.router.add_route(method, path, _dispatch(found), name=name or None)


def _dispatch(routes: list[Route]) -> Handler:
    param = routes[0].match[0] if routes[0].match else ""
    by_value = {r.match[1]: r.handler for r in routes if r.match is not None}

    async def dispatch(request: web.Request) -> web.StreamResponse:
        handler = by_value.get(request.match_info.get(param, ""))
        if handler is None:
            raise web.HTTPNotFound()
        return await handler(request)

    if all(handler_decodes(r.handler) for r in routes):
        decodes_content_encoding(dispatch)
    return dispatch
