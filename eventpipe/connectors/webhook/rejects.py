"""Refusals: one exception carrying the RFC 9457 answer, and the dead letter that
records a refused request (stage ``source``) so an operator can see and replay it.

Dead letters hold the raw body and the request's headers as ``http.<name>``
Kafka headers, with credentials and signatures replaced by ``[redacted]``; when
the request got as far as a mapped event, its ``ce_*`` attributes too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Unpack

from aiohttp import web

from eventpipe.dlq.record import DeadLetter
from eventpipe.problem import Refusal, RefusalParts

REDACTED = b"[redacted]"
HTTP_PREFIX = "http."


class Reject(Refusal):
    """A webhook request refused: the problem answer names the source, and the dead
    letter (when the status is in ``dead_letter.on``) records the request."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        attributes: list[tuple[str, bytes]] | None = None,
        **parts: Unpack[RefusalParts],
    ) -> None:
        super().__init__(status, slug, detail, **parts)
        self.attributes = attributes  # the mapped event's ce_* headers, when it got that far

    @classmethod
    def of(cls, refusal: Refusal) -> Reject:
        """A refusal found by the shared ingress code (body, CloudEvents binding)."""
        return cls(refusal.status, refusal.slug, refusal.detail, **refusal.parts())

    def response(
        self, source: str = "", *, instance: str | None = None, **members: Any
    ) -> web.Response:
        """The answer, naming the webhook source."""
        return super().response(
            instance=instance or f"/webhooks/{source}", source=source, **members
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
