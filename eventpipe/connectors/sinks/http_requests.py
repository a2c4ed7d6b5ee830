"""The requests the ``http`` sink makes of a write, and the order they must keep.

Per-event mode: one request per event; its ``Idempotency-Key`` is the event id,
percent-encoded like the ``ce-id`` header (so the two are equal).

Batch mode (``batch: true``): the records of one source partition are sent in
chunks of ``batch_size`` offsets, aligned (offsets ``[k * size, (k + 1) * size)``),
one ``application/cloudevents-batch+json`` request each; the key is a digest of
the chunk's event ids.  A chunk does not depend on how the pipeline happened to
cut its batches: after a restart, or another batch size, a chunk that is whole
in both is the same request with the same key.  Only a chunk cut by a pipeline
batch's edge (or missing a dead-lettered record) differs, and then its key
differs too, so a receiver never takes a new set of events for one it has
seen.  The events inside carry their own ids: deduplicate on (source, id).

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

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

from eventpipe.envelope import CloudEvent, to_http, to_http_batch
from eventpipe.envelope.http import encode_header_value
from eventpipe.errors import EventpipeError, is_retriable
from eventpipe.sink import DeliveryItem, HeldForOrderError, SinkUnavailableError


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


def batch_requests(
    items: Sequence[DeliveryItem],
    *,
    size: int,
    ordered: bool,
    failed: dict[int, BaseException],
) -> list[Request]:
    """One request per aligned chunk of ``size`` offsets of a source partition (items
    without an offset: per ``size`` items); a chunk's lane is its partition.  A record
    with an event that cannot be encoded fails in ``failed`` and is left out."""
    chunks: dict[tuple[str | None, int | None, int], list[DeliveryItem]] = {}
    for pos, it in enumerate(items):
        n = it.offset if it.offset is not None else pos
        chunks.setdefault((it.topic, it.partition, n // size), []).append(it)
    out: list[Request] = []
    for (topic, partition, _), chunk in chunks.items():
        try:
            req = _batch_request(chunk)
        except EventpipeError:  # find the records that cannot be encoded
            chunk = [it for it in chunk if _encodes(it, failed)]
            req = _batch_request(chunk)
        if req is not None:
            req.lane = (topic, partition) if ordered else None
            out.append(req)
    return out


def _batch_request(chunk: Sequence[DeliveryItem]) -> Request | None:
    events = [e for it in chunk for e in it.events]
    if not events:
        return None
    headers, body = to_http_batch(events)
    key = hashlib.sha256("\n".join(e.id for e in events).encode()).hexdigest()
    return Request([it.index for it in chunk if it.events], None, headers, body, key)


def _encodes(item: DeliveryItem, failed: dict[int, BaseException]) -> bool:
    for ev in item.events:
        try:
            to_http(ev, mode="structured")
        except EventpipeError as exc:
            put_failure(failed, item.index, exc)
            return False
    return True


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
