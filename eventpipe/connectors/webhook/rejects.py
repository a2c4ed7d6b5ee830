"""Refusals: one exception carrying the RFC 9457 answer, and the dead letter that
records a refused request (stage ``source``) so an operator can see and replay it.

Dead letters hold the raw body and the request's headers as ``http.<name>``
Kafka headers, with credentials and signatures replaced by ``[redacted]``; when
the request got as far as a mapped event, its ``ce_*`` attributes too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from eventpipe.dlq.record import DeadLetter
from eventpipe.problem import problem

REDACTED = b"[redacted]"
HTTP_PREFIX = "http."


class Reject(Exception):
    """Answer the request with ``status`` and a problem body; ``slug`` names the
    problem type, ``reason`` the cause (``field`` where it is)."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        attributes: list[tuple[str, bytes]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.field = field
        self.reason = reason
        self.errors = errors
        self.headers = headers
        self.attributes = attributes  # the mapped event's ce_* headers, when it got that far
        self.extra = extra  # further members of the problem

    def response(self, source: str, **extra: Any) -> web.Response:
        if self.extra:
            extra.update(self.extra)
        if self.errors is not None:
            extra["errors"] = self.errors
        return problem(
            self.status,
            self.slug,
            self.detail,
            field=None if self.errors is not None else self.field,
            reason=self.reason,
            instance=f"/webhooks/{source}",
            headers=self.headers,
            source=source,
            **extra,
        )


def request_headers(headers: Mapping[str, str], redacted: Iterable[str]) -> list[tuple[str, bytes]]:
    hidden = frozenset(redacted)
    out = []
    for name, value in headers.items():
        lname = name.lower()
        raw = REDACTED if lname in hidden else value.encode("utf-8", "surrogateescape")
        out.append((HTTP_PREFIX + lname, raw))
    return out


def dead_letter(
    reject: Reject,
    *,
    source: str,
    body: bytes | None,
    headers: Mapping[str, str],
    redacted: Iterable[str],
) -> DeadLetter:
    kafka_headers = request_headers(headers, redacted)
    if reject.attributes:
        kafka_headers = reject.attributes + kafka_headers
    return DeadLetter.from_exception(
        reject,
        key=None,
        value=body,
        headers=kafka_headers,
        pipeline=source,
        stage="source",
        step=reject.reason or reject.slug,
    )
