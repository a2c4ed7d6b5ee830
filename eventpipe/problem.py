"""RFC 9457 problem details: every HTTP error eventpipe answers is one of these."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from eventpipe.http_body import BodyError

PROBLEM_CT = "application/problem+json"

_TITLES = {
    400: "Malformed request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid event",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def problem(
    status: int,
    slug: str,
    detail: str,
    *,
    field: str | None = None,
    reason: str | None = None,
    title: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {
        "type": f"urn:eventpipe:problem:{slug}",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if field is not None:
        body["errors"] = [{"field": field, "reason": reason or detail}]
    body.update(extra)
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type=PROBLEM_CT,
        headers=headers,
    )


def body_problem(exc: BodyError) -> web.Response:
    """The answer to a body that cannot be read (too large, corrupt, unknown coding)."""
    return problem(
        exc.status, exc.slug, exc.detail, field=exc.field, reason=exc.reason, headers=exc.headers
    )
