"""What one sink write did to each record it was given, sorted for the retry loop.

A sink's ``deliver`` answers per record (ARCHITECTURE.md section 7; the classes
are in :mod:`eventpipe.sink`).  The batch processor treats them
in four ways, and only one of them uses up a record's attempts:

* delivered: done;
* held: the destination was unavailable for that record's request
  (:class:`SinkUnavailableError`): sent again after a backoff, no attempt used;
* deferred: not sent, waiting behind an earlier record of its key
  (:class:`HeldForOrderError`): sent again once that one is through, no attempt;
* failed: the record's own failure (HTTP 500, a 4xx, bad data): an attempt.

The circuit breaker counts a write as failed when unavailability dominated it:
at least half of the records the write tried (deferred ones were not tried)
were held.  So a partial outage, where most requests meet a 503, opens it as a
full one does, while one record the endpoint keeps refusing among many it
takes does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from eventpipe.sink import (
    DeliveryItem,
    HeldForOrderError,
    SinkUnavailableError,
    retry_after_of,
)


@dataclass
class WriteOutcome:
    delivered: list[DeliveryItem] = field(default_factory=list)
    held: list[tuple[DeliveryItem, SinkUnavailableError]] = field(default_factory=list)
    deferred: list[DeliveryItem] = field(default_factory=list)
    failed: list[tuple[DeliveryItem, BaseException]] = field(default_factory=list)

    @property
    def tried(self) -> int:
        return len(self.delivered) + len(self.held) + len(self.failed)

    @property
    def unavailable(self) -> bool:
        """Unavailability dominated the write (the breaker counts it as failed)."""
        return bool(self.held) and 2 * len(self.held) >= self.tried

    def retry_after(self) -> float | None:
        """The longest Retry-After the held records were answered, if any."""
        hints = [a for _, exc in self.held if (a := retry_after_of(exc)) is not None]
        return max(hints) if hints else None


def sort_write(sent: Sequence[DeliveryItem], failed: Mapping[int, BaseException]) -> WriteOutcome:
    out = WriteOutcome()
    for it in sent:
        err = failed.get(it.index)
        if err is None:
            out.delivered.append(it)
        elif isinstance(err, SinkUnavailableError):
            out.held.append((it, err))
        elif isinstance(err, HeldForOrderError):
            out.deferred.append(it)
        else:
            out.failed.append((it, err))
    return out


def probe(queue: Sequence[DeliveryItem]) -> list[DeliveryItem]:
    """What a half-open breaker lets through: up to the first record with events, so
    a probe costs one request (one timeout against an endpoint that hangs), not the
    whole pending batch."""
    for n, it in enumerate(queue):
        if it.events:
            return list(queue[: n + 1])
    return list(queue)
