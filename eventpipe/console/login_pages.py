"""``/console/login`` and ``/console/logout``: the admin token and the operator's
name in, a signed session cookie out."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from eventpipe.console import audit
from eventpipe.console.access import public, route, see_other, set_cookie
from eventpipe.console.render import render
from eventpipe.console.session import SESSION_COOKIE, check_who
from eventpipe.console.state import console_of, session_of

log = logging.getLogger(__name__)


def safe_next(value: object) -> str:
    """Only a path of the console itself (no other site: an open redirect)."""
    if not isinstance(value, str) or not value.startswith("/console/"):
        return "/console/"
    if "//" in value or "\\" in value or any(ord(c) < 32 for c in value):
        return "/console/"
    return value


@public
async def login_form(request: web.Request) -> web.Response:
    return render(
        request,
        "login.html",
        next=safe_next(request.query.get("next")),
        given_who="",
        problem=None,
        field=None,
    )


@public
async def login(request: web.Request) -> web.Response:
    console = console_of(request)
    form = await request.post()
    token, who, nxt = (str(form.get(k, "")) for k in ("token", "who", "next"))
    who = who.strip()

    def refused(status: int, field: str, why: str) -> web.Response:
        return render(
            request,
            "login.html",
            status=status,
            next=safe_next(nxt),
            given_who=who,
            problem=why,
            field=field,
        )

    admin = console.settings.service.admin_token
    if admin is None:
        return refused(
            403,
            "token",
            "logins are off: set service.admin_token (EVENTPIPE_SERVICE_ADMIN_TOKEN) and "
            "restart the service",
        )
    why = check_who(who)
    if why is not None:
        return refused(400, "who", f"name: {why}")
    if not hmac.compare_digest(token.encode(), admin.get_secret_value().encode()):
        log.warning("console: a login as %r was refused (wrong admin token)", who)
        return refused(401, "token", "that is not the admin token (service.admin_token)")
    _, cookie = console.keys.issue(who)
    await audit.record(console.pool, who, "login")
    resp = see_other(safe_next(nxt))
    set_cookie(request, resp, SESSION_COOKIE, cookie, console.keys.ttl_s)
    return resp


@public
async def logout(request: web.Request) -> web.Response:
    session = session_of(request)
    if session is not None:
        await audit.record(console_of(request).pool, session.who, "logout")
    resp = see_other("/console/login")
    resp.del_cookie(SESSION_COOKIE, path="/console/")
    return resp


ROUTES = (
    route("GET", "/login", "the login form (your name and the admin token)", "public"),
    route("POST", "/login", "log in: a signed session cookie", "public"),
    route("POST", "/logout", "log out", "public"),
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_form, name="console.login_form")
    app.router.add_post("/login", login, name="console.login")
    app.router.add_post("/logout", logout, name="console.logout")
