"""``/console/activity``: the audit log, newest first."""

from __future__ import annotations

from aiohttp import web

from eventpipe.console import audit
from eventpipe.console.access import route
from eventpipe.console.render import render
from eventpipe.console.state import console_of

SHOWN = 200


async def activity_page(request: web.Request) -> web.Response:
    console = console_of(request)
    rows = await audit.recent(console.pool, SHOWN)
    shown = [
        {
            "at": a.at,
            "who": console.redactor.text(a.who),
            "action": a.action,
            "target": a.target,
            "reason": console.redactor.text(a.reason) if a.reason else None,
            "detail": console.redactor.doc(a.detail),
            "outcome": console.redactor.text(a.outcome),
        }
        for a in rows
    ]
    return render(request, "activity.html", rows=shown, shown_max=SHOWN)


ROUTES = (route("GET", "/activity", "the audit log: every replay, discard, login and logout"),)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/activity", activity_page, name="console.activity")
