"""``/console/trace``: what happened to an event, the page of ``eventpipe trace``
(the same document, from :func:`eventpipe.trace.lookup.trace_event`), secrets
masked as on every console page."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from eventpipe.console.access import route
from eventpipe.console.render import error, render
from eventpipe.console.state import console_of
from eventpipe.dlq.query import FilterError, parse_when
from eventpipe.errors import BrokerUnavailableError
from eventpipe.trace.lookup import DEFAULT_SINCE, TraceIndexMissingError, trace_event
from eventpipe.trace.render import not_found

MAX_ID = 512  # as a webhook's event id


async def trace_page(request: web.Request) -> web.Response:
    console = console_of(request)
    q = request.query
    form = {
        "id": q.get("id", "").strip(),
        "source": q.get("source", "").strip(),
        "since": q.get("since", "").strip() or DEFAULT_SINCE,
    }
    if not form["id"]:
        return render(request, "trace.html", form=form, doc=None, problem=None, missing=None)
    if len(form["id"]) > MAX_ID:
        return _refused(request, form, f"id: an event id is at most {MAX_ID} characters")
    try:
        since = parse_when(form["since"], "since")
    except FilterError as exc:
        return _refused(request, form, str(exc))
    try:
        trace = await trace_event(
            console.settings,
            console.pool,
            form["id"],
            since=since,
            source=form["source"] or None,
        )
    except TraceIndexMissingError as exc:
        return error(request, 503, "trace-index-missing", str(exc))
    except BrokerUnavailableError as exc:
        return error(request, 503, "broker-unavailable", str(exc))
    doc: dict[str, Any] = console.redactor.doc(trace.to_doc())
    return render(
        request,
        "trace.html",
        form=form,
        doc=doc,
        problem=None,
        missing=None if trace.found else console.redactor.text(not_found(doc)),
    )


def _refused(request: web.Request, form: dict[str, str], detail: str) -> web.Response:
    return render(
        request, "trace.html", status=400, form=form, doc=None, problem=detail, missing=None
    )


ROUTES = (
    route(
        "GET",
        "/trace",
        "the trace of an event (`?id=EVENT_ID`): where it landed, what each pipeline did",
    ),
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/trace", trace_page, name="console.trace")
