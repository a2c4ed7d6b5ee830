"""``GET /v1/trace/{event_id}``: the trace of one event as JSON (the document
``eventpipe trace --json`` prints).  Behind the DLQ admin API's bearer token
(``service.admin_token``); readable without it when the web console's
``service.console.public_read`` is on.  ``?since=`` (default 24h) and ``?source=``
as the command's flags.  404 problem when the event is not found, with where the
trace looked."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from eventpipe.context import Context
from eventpipe.dlq.admin_api import _authorized  # the same check as /v1/dlq
from eventpipe.dlq.query import FilterError, parse_when
from eventpipe.errors import BrokerUnavailableError
from eventpipe.problem import problem
from eventpipe.route_docs import ADMIN_TOKEN, RouteDoc

from .lookup import DEFAULT_SINCE, TraceIndexMissingError, trace_event
from .render import not_found

ROUTES = (
    RouteDoc(
        "GET",
        "/v1/trace/{event_id}",
        "what happened to an event: where it landed, what each pipeline did "
        "(`?since=24h&source=NAME`; the document of `eventpipe trace --json`)",
        ADMIN_TOKEN + " (none with `service.console.public_read`)",
    ),
)


def install(app: web.Application, ctx: Context) -> None:
    async def get_trace(request: web.Request) -> web.Response:
        if not ctx.settings.service.console.public_read:
            denied = _authorized(request, ctx)
            if denied is not None:
                return denied
        event_id = request.match_info["event_id"]
        try:
            since = parse_when(request.query.get("since") or DEFAULT_SINCE, "since")
        except FilterError as exc:
            return problem(400, "bad-filter", str(exc), field="since", reason=str(exc))
        assert ctx.pool is not None
        try:
            trace = await trace_event(
                ctx.settings, ctx.pool, event_id, since=since, source=request.query.get("source")
            )
        except TraceIndexMissingError as exc:
            return problem(503, "trace-index-missing", str(exc))
        except BrokerUnavailableError as exc:
            return problem(503, "broker-unavailable", str(exc))
        doc = trace.to_doc()
        if not trace.found:
            return problem(404, "not-found", not_found(doc), looked=doc["looked"])
        return web.json_response(doc, dumps=_dumps)

    app.router.add_get("/v1/trace/{event_id:.+}", get_trace, name="trace")


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()
