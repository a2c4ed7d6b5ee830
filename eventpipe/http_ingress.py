"""HTTP ingress: how the routes that take events from outside (the publish API,
``POST /v1/topics/{topic}/events``, and webhooks, ``POST /webhooks/{name}``) refuse
a request, in one place.

Every refusal is a :class:`~eventpipe.problem.Refusal` (RFC 9457 problem JSON
naming the field and the reason):

==============================================  ======  ==========================
cause                                           status  problem type
==============================================  ======  ==========================
body over its limit (decoded size)              413     ``body-too-large``
unknown ``Content-Encoding``                    415     ``unsupported-content-encoding``
corrupt compressed body, broken framing         400     ``malformed``
content type the CloudEvents binding refuses    415     ``unsupported-media-type``
bytes that do not parse (JSON, UTF-8, headers)  400     ``malformed``
an event that breaks the CloudEvents spec       422     ``invalid-event``
more events in a batch than allowed             413     ``batch-too-large``
a record larger than the broker takes           413     ``record-too-large``
the broker did not acknowledge                  503     ``broker-unavailable`` (+ Retry-After)
==============================================  ======  ==========================

The first three come from reading the body (:mod:`eventpipe.http_body`), the
others from here.  The routes answer with :meth:`Refusal.response`; webhooks add
their source and, for the causes listed in ``dead_letter.on``, a dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.http import from_http
from eventpipe.errors import InvalidEventError, MalformedEventError, UnsupportedMediaTypeError
from eventpipe.problem import Refusal


def parse_events(headers: Mapping[str, str], body: bytes) -> list[CloudEvent]:
    """The request's CloudEvents (binary, structured or batch mode); the binding's
    errors as refusals, each caused by the binding's error."""
    try:
        return from_http(headers, body)
    except UnsupportedMediaTypeError as exc:
        raise Refusal(
            415,
            "unsupported-media-type",
            str(exc),
            field="content-type",
            reason=str(exc),
            extra={"accepted": exc.accepted},
        ) from exc
    except MalformedEventError as exc:
        raise Refusal(400, "malformed", str(exc), field=exc.field, reason=exc.reason) from exc
    except InvalidEventError as exc:
        raise Refusal(422, "invalid-event", str(exc), field=exc.field, reason=exc.reason) from exc


def check_batch(count: int, limit: int, setting: str) -> None:
    """At most ``limit`` events in one request (``setting`` names the limit)."""
    if count > limit:
        raise Refusal(
            413,
            "batch-too-large",
            f"the batch holds {count} events; at most {limit} ({setting})",
            field="body",
            reason="too many events",
        )


def record_too_large(detail: str, *, field: str, **extra: Any) -> Refusal:
    """The broker refuses a record this large (its ``message.max.bytes``)."""
    return Refusal(
        413,
        "record-too-large",
        detail,
        field=field,
        reason="record too large for the broker",
        extra=extra or None,
    )


def broker_unavailable(detail: str, retry_after_s: float, **extra: Any) -> Refusal:
    """The broker did not acknowledge in time: retry after ``retry_after_s``."""
    return Refusal(
        503,
        "broker-unavailable",
        detail,
        headers={"Retry-After": str(retry_after_s)},
        extra=extra or None,
    )
