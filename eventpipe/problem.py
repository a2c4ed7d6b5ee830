"""RFC 9457 problem details: every HTTP error eventpipe answers is one of these.

:func:`problem` builds the answer; :class:`Refusal` carries one from where the
reason is found (reading the body, parsing the events) to the handler that answers.
"""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

import orjson
from aiohttp import web

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


class RefusalParts(TypedDict, total=False):
    """A refusal's optional parts (see :class:`Refusal`)."""

    field: str | None
    reason: str | None
    errors: list[dict[str, str]] | None
    headers: dict[str, str] | None
    extra: dict[str, Any] | None


class Refusal(Exception):
    """A request refused with ``status``: ``slug`` names the problem type, ``reason``
    the cause (``field`` where it is, or ``errors`` when there are several);
    ``headers`` go on the answer and ``extra`` holds further members of it."""

    def __init__(self, status: int, slug: str, detail: str, **parts: Unpack[RefusalParts]) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.field = parts.get("field")
        self.reason = parts.get("reason")
        self.errors = parts.get("errors")
        self.headers = parts.get("headers")
        self.extra = parts.get("extra")

    def parts(self) -> RefusalParts:
        return RefusalParts(
            field=self.field,
            reason=self.reason,
            errors=self.errors,
            headers=self.headers,
            extra=self.extra,
        )

    def response(self, *, instance: str | None = None, **members: Any) -> web.Response:
        """The problem answer; ``members`` are added to it."""
        if self.extra:
            members.update(self.extra)
        if self.errors is not None:
            members["errors"] = self.errors
        return problem(
            self.status,
            self.slug,
            self.detail,
            field=None if self.errors is not None else self.field,
            reason=self.reason,
            instance=instance,
            headers=self.headers,
            **members,
        )
