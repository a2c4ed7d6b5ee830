"""Who may do what in the console, checked once for every request.

- ``public`` routes (the login form, static files) are open to anyone;
- reading (every other GET, and read-only POSTs such as a compatibility check)
  needs a login, unless ``service.console.public_read`` is on;
- an ``action`` (anything that changes something) always needs a login, made with
  ``service.admin_token``;
- every POST must carry the CSRF token of the visitor's session (or, before the
  login, of the anonymous cookie): 403 otherwise, and nothing is done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal
from urllib.parse import quote

from aiohttp import web

from eventpipe.console.render import API_PREFIX, SECURITY_HEADERS, error
from eventpipe.console.session import ANON_COOKIE, COOKIE_PATH, SESSION_COOKIE, new_anon_id
from eventpipe.console.state import ANON, NEW_ANON, SESSION, console_of, csrf_binding
from eventpipe.route_docs import NO_AUTH, RouteDoc

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Access = Literal["public", "read", "action"]
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


_AUTH: dict[tuple[Access, str], str] = {
    ("public", "GET"): NO_AUTH,
    ("public", "POST"): "the form's CSRF token",
    ("read", "GET"): "console login, unless `service.console.public_read`",
    ("read", "POST"): "console login (unless `service.console.public_read`) and the form's "
    "CSRF token",
    ("action", "POST"): "console login (name and `service.admin_token`) and the form's CSRF token",
}


def route(method: str, path: str, what: str, access: Access = "read") -> RouteDoc:
    """A console route's line in docs/reference.md; ``path`` under ``/console``, and
    what ``access`` asks of the caller (tests/unit/test_reference.py checks it
    against the handler's own access)."""
    return RouteDoc(method, "/console" + path, what, _AUTH[(access, method)])


def public(handler: Handler) -> Handler:
    handler.console_access = "public"  # type: ignore[attr-defined]
    return handler


def action(handler: Handler) -> Handler:
    handler.console_access = "action"  # type: ignore[attr-defined]
    return handler


def access_of(request: web.Request) -> Access:
    route_handler = request.match_info.handler
    found = getattr(route_handler, "console_access", "read")
    return "public" if found == "public" else "action" if found == "action" else "read"


def secure(request: web.Request) -> bool:
    """Cookies get ``Secure`` when the visitor came over TLS (here or at a proxy)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_cookie(
    request: web.Request, resp: web.StreamResponse, name: str, value: str, max_age: int | None
) -> None:
    resp.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=secure(request),
    )


def login_redirect(request: web.Request) -> web.StreamResponse:
    if request.method != "GET" or request.path.startswith(API_PREFIX):
        return error(
            request,
            401,
            "login-required",
            "log in to the console first (service.admin_token)",
            headers={"WWW-Authenticate": 'Cookie realm="eventpipe-console"'},
        )
    return see_other(f"/console/login?next={quote(request.path_qs, safe='')}")


def see_other(location: str) -> web.Response:
    """Post/redirect/get: where a browser goes after a form."""
    return web.Response(status=303, headers={"Location": location})


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = console_of(request)
    request[SESSION] = console.keys.session(request.cookies.get(SESSION_COOKIE))
    anon = request.cookies.get(ANON_COOKIE)
    if not anon or len(anon) > 64:
        anon = new_anon_id()
        request[NEW_ANON] = True
    request[ANON] = anon
    resp = await _checked(request, handler)
    if request.get(NEW_ANON) and not resp.prepared:
        set_cookie(request, resp, ANON_COOKIE, anon, None)
    for k, v in SECURITY_HEADERS.items():
        resp.headers.setdefault(k, v)
    return resp


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = console_of(request)
    access = access_of(request)
    logged_in = request[SESSION] is not None
    if (
        access != "public"
        and not logged_in
        and (access == "action" or not console.config.public_read)
    ):
        return login_redirect(request)
    if request.method == "POST":
        token = request.headers.get(CSRF_HEADER)
        if token is None:
            form = await request.post()
            field = form.get(CSRF_FIELD)
            token = field if isinstance(field, str) else None
        if not console.keys.csrf_ok(csrf_binding(request), token):
            return error(
                request,
                403,
                "csrf",
                "the form's CSRF token is missing or not this session's: reload the page "
                "and try again (nothing was done)",
                field=CSRF_FIELD,
            )
    return await handler(request)
