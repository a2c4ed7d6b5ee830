"""Every component of a process as one status: what ``GET /v1/status``, ``eventpipe
status`` and the console's overview show, and the last hour of each component's
rates and lag.

:meth:`StatusBoard.snapshot` reads each component's ``status()`` and ``health()``
(snapshots, no I/O) and says whether anything needs attention: a component or a
sink that is failed, stalled or paused (a circuit open), or whose health is not
"ok" (a pipeline waiting for its schema subject, a CDC slot failing).

The history is sampled in memory by the process itself, every
:data:`HISTORY_INTERVAL_S` seconds, :data:`HISTORY_POINTS` points per component
(an hour): events/s in and out, and the lag summed over partitions.  It is gone
on restart; Prometheus (``/metrics``) is where longer history lives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventpipe.loop import cancel
from eventpipe.plugin import Component
from eventpipe.status import ComponentStatus

log = logging.getLogger(__name__)
HISTORY_INTERVAL_S = 10.0
HISTORY_POINTS = 360
ATTENTION_STATES = frozenset({"failed", "stalled", "paused"})


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # seconds since the epoch
    rate_in: float
    rate_out: float
    lag: int


def total_lag(st: ComponentStatus) -> int:
    return sum(st.lag.values())


def needs_attention(st: ComponentStatus, health: str) -> bool:
    """Failed, stalled, paused (a sink's circuit is open), or not healthy."""
    if health != "ok" or st.state in ATTENTION_STATES:
        return True
    return any(c.state in ATTENTION_STATES for c in st.children)


def facts(entry: dict[str, Any]) -> list[str]:
    """What a component of a snapshot knows besides its counters, the parts worth a
    glance (`eventpipe status`'s details column, the console's overview): the
    subject it waits for, the schema versions it uses, an open circuit, a CDC
    slot's replication and lag, a webhook's spool."""
    d: dict[str, Any] = entry.get("details") or {}
    out: list[str] = []
    for w in d.get("waiting_for") or []:
        out.append(f"waits for subject {w['subject']} ({w['version']})")
    for s in d.get("schemas") or []:
        out.append(f"{s['subject']} v{s['version']}")
    if "circuit" in d and d["circuit"] != "closed":
        out.append(f"circuit {d['circuit']}")
    if "replication" in d:
        out.append(f"replication {d['replication']}")
    if d.get("slot_lag_bytes") is not None:
        out.append(f"slot lag {_bytes(d['slot_lag_bytes'])}")
    if "spool_depth" in d:
        out.append(f"spool {d['spool_depth']}" + (" (spooling)" if d.get("spooling") else ""))
    if isinstance(d.get("stalled"), str):
        out.append(d["stalled"])
    return out


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class StatusBoard:
    """The components of one process, their snapshot and their sampled history."""

    def __init__(
        self,
        components: Sequence[Component],
        *,
        interval_s: float = HISTORY_INTERVAL_S,
        points: int = HISTORY_POINTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.components = list(components)
        self.interval_s = interval_s
        self.points = points
        self._clock = clock
        self._history: dict[str, deque[Sample]] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ snapshot
    def find(self, name: str) -> Component | None:
        """The component whose check name (``pipeline:orders``) or name is ``name``;
        a check name wins over a name another kind shares."""
        for comp in self.components:
            if comp.check_name == name:
                return comp
        for comp in self.components:
            if comp.name == name:
                return comp
        return None

    def entry(self, comp: Component) -> dict[str, Any]:
        """One component as the status API shows it: its ``status().to_dict()`` with
        its check name, its health and whether it needs attention."""
        st = comp.status()
        try:
            health = comp.health()
        except Exception as exc:  # a status page must not fail on one component
            health = f"unavailable: {type(exc).__name__}"
        return {
            "check": comp.check_name,
            "health": health,
            "attention": needs_attention(st, health),
            **st.to_dict(),
            "lag_total": total_lag(st),
        }

    def snapshot(self, components: Iterable[Component] | None = None) -> dict[str, Any]:
        entries = [self.entry(c) for c in (self.components if components is None else components)]
        attention = [e["check"] for e in entries if e["attention"]]
        return {
            "ok": not attention,
            "attention": attention,
            "at": datetime.fromtimestamp(self._clock(), UTC).isoformat(),
            "components": entries,
        }

    # ------------------------------------------------------------- history
    def sample(self) -> None:
        """One point of history for every component (taken every ``interval_s``)."""
        now = self._clock()
        for comp in self.components:
            try:
                st = comp.status()
            except Exception:
                log.debug("status of %s failed", comp.label, exc_info=True)
                continue
            points = self._history.setdefault(comp.check_name, deque(maxlen=self.points))
            points.append(Sample(now, st.rate_in, st.rate_out, total_lag(st)))

    def history(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        wanted = None if names is None else set(names)
        out: dict[str, dict[str, list[Any]]] = {}
        for check, points in self._history.items():
            if wanted is not None and check not in wanted:
                continue
            out[check] = {
                "at": [round(p.at, 3) for p in points],
                "rate_in": [round(p.rate_in, 3) for p in points],
                "rate_out": [round(p.rate_out, 3) for p in points],
                "lag": [p.lag for p in points],
            }
        return {"interval_s": self.interval_s, "points": self.points, "components": out}

    async def _sample_every_interval(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        """Sample now, then every ``interval_s``, until :meth:`stop`."""
        if self._task is None and self.components:
            self._task = asyncio.create_task(self._sample_every_interval(), name="status history")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)


__all__ = [
    "ATTENTION_STATES",
    "HISTORY_INTERVAL_S",
    "HISTORY_POINTS",
    "Sample",
    "StatusBoard",
    "facts",
    "needs_attention",
    "total_lag",
]
