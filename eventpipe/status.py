"""What a component says about itself: a :class:`ComponentStatus` snapshot, and the
small counters it is made from.

``Component.status()`` returns a snapshot that the service's status API and the
console read: the state, events per second in and out over the last minute
(:class:`RateMeter`), consumer lag per partition, dead letters by stage, the last
error and when it happened, and whatever else the component knows (slot lag,
spool depth, circuit state) under ``details``.  A pipeline's sinks are its
``children``.  :meth:`ComponentStatus.to_dict` gives the JSON form.

Counting must stay cheap on the hot path: a meter is marked once per batch, with
the batch's size, never per event.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from eventpipe.errors import error_class_name

State = Literal["starting", "running", "paused", "stalled", "waiting", "failed", "stopped"]
"""``paused``: held back on purpose (a sink's circuit is open); ``stalled``: should
move and does not (lag that does not shrink, a slot that does not advance);
``waiting``: nothing to do yet (no partition assigned, standby for a lock);
``failed``: stopped on an error (the service exits)."""

WINDOW_S = 60
RECENT_ERRORS = 20  # errors a component keeps for its status (the newest)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error a component met: its message, its class, and when."""

    message: str
    error_class: str
    at: datetime

    @classmethod
    def of(cls, exc: BaseException, at: datetime | None = None) -> ErrorInfo:
        return cls(
            message=str(exc) or type(exc).__name__,
            error_class=error_class_name(exc),
            at=at or datetime.now(UTC),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "class": self.error_class, "at": self.at.isoformat()}


class RateMeter:
    """Events per second over the last ``window_s`` seconds (or since the meter was
    made, when that is shorter), in one-second buckets; ``total`` counts every
    event ever marked.  ``clock`` is injectable for tests."""

    __slots__ = ("_clock", "_counts", "_stamps", "_started", "_window", "total")

    def __init__(self, window_s: int = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        if window_s < 1:
            raise ValueError("window_s must be at least 1")
        self._window = window_s
        self._clock = clock
        self._counts = [0] * window_s
        self._stamps = [-1] * window_s
        self._started = clock()
        self.total = 0

    def mark(self, n: int = 1) -> None:
        if n <= 0:
            return
        second = int(self._clock())
        i = second % self._window
        if self._stamps[i] != second:
            self._stamps[i] = second
            self._counts[i] = n
        else:
            self._counts[i] += n
        self.total += n

    def rate(self) -> float:
        now = self._clock()
        second = int(now)
        recent = sum(
            c
            for c, s in zip(self._counts, self._stamps, strict=True)
            if 0 <= second - s < self._window
        )
        span = min(float(self._window), max(1.0, now - self._started))
        return recent / span


@dataclass
class Activity:
    """What a component counts for its status: events in and out, dead letters by
    stage (or by sink), the last error and the :data:`RECENT_ERRORS` before it."""

    events_in: RateMeter = field(default_factory=RateMeter)
    events_out: RateMeter = field(default_factory=RateMeter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    last_error: ErrorInfo | None = None
    recent_errors: deque[ErrorInfo] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))

    def failed(self, exc: BaseException) -> None:
        self.noted(ErrorInfo.of(exc))

    def noted(self, error: ErrorInfo) -> None:
        """``error`` is the component's last one (and the newest of its recent ones)."""
        self.last_error = error
        self.recent_errors.append(error)

    def status(
        self, *, name: str, kind: str, type: str, state: State, **more: Any
    ) -> ComponentStatus:
        return ComponentStatus(
            name=name,
            kind=kind,
            type=type,
            state=state,
            rate_in=self.events_in.rate(),
            rate_out=self.events_out.rate(),
            total_in=self.events_in.total,
            total_out=self.events_out.total,
            dead_letters=dict(self.dead_letters),
            last_error=self.last_error,
            recent_errors=list(self.recent_errors),
            **more,
        )


@dataclass
class ComponentStatus:
    name: str
    kind: str  # source | sink | pipeline
    type: str  # the plugin's type: webhook, postgres, pipeline, ...
    state: State
    rate_in: float = 0.0  # events/s over the last minute
    rate_out: float = 0.0
    total_in: int = 0  # since the component started
    total_out: int = 0
    lag: dict[str, int] = field(default_factory=dict)  # "topic[partition]" -> records
    dead_letters: dict[str, int] = field(default_factory=dict)  # stage -> count
    last_error: ErrorInfo | None = None
    recent_errors: list[ErrorInfo] = field(default_factory=list)  # oldest first
    details: dict[str, Any] = field(default_factory=dict)
    children: list[ComponentStatus] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "type": self.type,
            "state": self.state,
            "rate_in": round(self.rate_in, 3),
            "rate_out": round(self.rate_out, 3),
            "total_in": self.total_in,
            "total_out": self.total_out,
            "lag": dict(self.lag),
            "dead_letters": dict(self.dead_letters),
            "last_error": None if self.last_error is None else self.last_error.to_dict(),
            "recent_errors": [e.to_dict() for e in self.recent_errors],
            "details": {k: _jsonable(v) for k, v in self.details.items()},
            "children": [c.to_dict() for c in self.children],
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


__all__ = [
    "RECENT_ERRORS",
    "WINDOW_S",
    "Activity",
    "ComponentStatus",
    "ErrorInfo",
    "RateMeter",
    "State",
]
