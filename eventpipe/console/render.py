"""Pages from Jinja2 templates (autoescaped), and errors as a page for a browser or
as RFC 9457 problem JSON for everything else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from eventpipe.console.nav import SECTIONS
from eventpipe.console.state import console_of, csrf_binding, session_of
from eventpipe.problem import problem

API_PREFIX = "/console/api/"
SPARK_W, SPARK_H = 120, 24  # the overview's small charts, in SVG units
# Scripts and styles come from /console/static only: an injected inline script
# would not run even if escaping ever failed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _segment(value: object) -> str:
    """A value as one URL path segment (a subject may hold a slash)."""
    return quote(str(value), safe="")


def _diff_class(line: str) -> str:
    """The CSS class of a unified diff's line."""
    if line.startswith(("+++", "---")):
        return "meta"
    return {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "same")


def spark(values: list[float]) -> str:
    """The ``points`` of an SVG polyline for ``values``, oldest at the left edge,
    newest at the right (the span is the history kept: since the service started,
    up to an hour), the largest value at the top; one value is a flat line.
    ``static/status.js`` draws the same line the same way."""
    if not values:
        return ""
    if len(values) == 1:
        values = [values[0], values[0]]
    top = max(values) or 1.0
    step = SPARK_W / (len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{SPARK_H - 1 - (v / top) * (SPARK_H - 2):.1f}"
        for i, v in enumerate(values)
    )


def _rate(value: float) -> str:
    """Events per second as the overview shows them (status.js: the same)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _iso(value: str | None) -> str:
    """An ISO 8601 time from a status snapshot, shown as the other pages show times."""
    return _when(datetime.fromisoformat(value)) if value else "-"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("eventpipe.console", "templates"),
        autoescape=select_autoescape(["html"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = _pretty
    env.filters["when"] = _when
    env.filters["segment"] = _segment
    env.filters["diffclass"] = _diff_class
    env.filters["spark"] = spark
    env.filters["rate"] = _rate
    env.filters["iso"] = _iso
    env.globals["sections"] = SECTIONS
    return env


ENV = _environment()


def render(
    request: web.Request, template: str, *, status: int = 200, **values: Any
) -> web.Response:
    console = console_of(request)
    session = session_of(request)
    binding = csrf_binding(request)
    page = ENV.get_template(template).render(
        request_path=request.path_qs,
        who=session.who if session else None,
        logins=console.keys.logins,
        public_read=console.config.public_read,
        csrf=console.keys.csrf(binding) if binding else "",
        **values,
    )
    return web.Response(
        text=page, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


def wants_json(request: web.Request) -> bool:
    if request.path.startswith(API_PREFIX):
        return True
    accept = request.headers.get("Accept", "")
    return "text/html" not in accept and "application/xhtml" not in accept


def error(
    request: web.Request,
    status: int,
    slug: str,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The answer to a request the console refuses: a page for a browser, problem
    JSON otherwise (the same ``type``, ``detail`` and field)."""
    if wants_json(request):
        return problem(status, slug, detail, field=field, headers=headers)
    resp = render(
        request, "error.html", status=status, slug=slug, detail=detail, field=field, title=None
    )
    if headers:
        resp.headers.update(headers)
    return resp
