"""The requests the ``http`` sink makes of a write, and the order they must keep.

Per-event mode: one request per event; its ``Idempotency-Key`` is the event id,
percent-encoded like the ``ce-id`` header (so the two are equal).

Ordering (``ordering: key``, the default): requests that share a *lane* go one
after the other, in the order of the records; lanes run concurrently.  An
event's lane is its ``partitionkey``, else the Kafka key of the record it came
from; an event with neither has no lane (it goes whenever a slot is free).
Once a request of a lane fails retriably (it will be sent again), the lane's
later requests are not sent in this write (``HeldForOrderError``): they follow
it.  A permanent failure does not stop its lane: that record is dead-lettered,
as Kafka Connect's ``errors.tolerance: all`` would skip it.
``ordering: none``: every request goes whenever a slot is free.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

from eventpipe.envelope import CloudEvent, to_http
from eventpipe.envelope.http import encode_header_value
from eventpipe.errors import EventpipeError, is_retriable

from .api import DeliveryItem, HeldForOrderError, SinkUnavailableError


@dataclass(slots=True)
class Request:
    indexes: list[int]  # the records it carries
    lane: Hashable | None  # requests of one lane go in order; None: no order to keep
    headers: dict[str, str]
    body: bytes
    key: str  # Idempotency-Key


def event_lane(event: CloudEvent, item: DeliveryItem) -> bytes | None:
    """``partitionkey``, else the record's Kafka key (the one partitionkey became)."""
    pk = event.partitionkey
    return pk.encode("utf-8") if pk is not None else item.key


def event_requests(
    items: Sequence[DeliveryItem],
    *,
    mode: Literal["binary", "structured"],
    ordered: bool,
    failed: dict[int, BaseException],
) -> list[Request]:
    """One request per event; an event that cannot be encoded fails its record in
    ``failed`` (permanently) and is not sent."""
    out: list[Request] = []
    for it in items:
        for ev in it.events:
            try:
                headers, body = to_http(ev, mode=mode)
            except EventpipeError as exc:
                put_failure(failed, it.index, exc)
                continue
            lane = event_lane(ev, it) if ordered else None
            out.append(Request([it.index], lane, headers, body, encode_header_value(ev.id)))
    return out


def lanes(requests: Sequence[Request]) -> list[list[Request]]:
    """Requests grouped by lane, each lane in order; a request without a lane alone."""
    by_lane: dict[Hashable, list[Request]] = {}
    out: list[list[Request]] = []
    for r in requests:
        if r.lane is None:
            out.append([r])
            continue
        lane = by_lane.get(r.lane)
        if lane is None:
            lane = by_lane[r.lane] = []
            out.append(lane)
        lane.append(r)
    return out


def blocks_lane(err: BaseException | None) -> bool:
    """A failure the record will be retried for: later requests of its lane wait."""
    return err is not None and is_retriable(err)


def held_for_order(label: str, blocker: Request) -> HeldForOrderError:
    return HeldForOrderError(
        f"sink {label}: not sent; waits for the request {blocker.key!r} of the same key"
    )


def _severity(exc: BaseException) -> int:
    if isinstance(exc, HeldForOrderError):
        return 0
    if isinstance(exc, SinkUnavailableError):
        return 1
    return 2 if is_retriable(exc) else 3


def put_failure(failed: dict[int, BaseException], index: int, exc: BaseException) -> None:
    """Record ``exc`` for the record unless it already has a worse failure: a record
    with several events is dead-lettered if one is permanent, charged an attempt if
    one failed on its own, held if one met an unavailable endpoint."""
    cur = failed.get(index)
    if cur is None or _severity(exc) > _severity(cur):
        failed[index] = exc
