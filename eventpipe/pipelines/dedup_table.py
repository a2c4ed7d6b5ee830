"""Dedup on (source, id) within a window, in a changelog-backed faust table.

The table maps ``"<source>\\x00<id>"`` to ``[first_seen_ms, partition]``.  A
record is marked only after every sink took its outputs, so a record that was
dead-lettered is not a duplicate when it is replayed.  Writes go to the
changelog partition of the record being processed (faust's rule for tables
that are not ``use_partitioner``), so the caller sets the current faust event
first (:func:`eventpipe.pipelines.faust_adapter.current_event`).

Entries older than the window are deleted by :meth:`DedupTable.expire`, called
per batch with a record of the partition being swept as the current event.
The same class backs the ``dedup`` step (``{dedup: {key: '.data.order_id',
window: 1h}}``): its key is a jq expression instead of (source, id).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from pydantic import Field

from eventpipe.durations import Duration
from eventpipe.transforms.jq_engine import DEFAULT_ENGINE, EngineName

from .spec import SpecModel


class DedupStepConfig(SpecModel):
    """Drops an event whose key was seen within the window (the pipeline's own
    ``state.dedup_window`` dedups by source and id; this step by any key)."""

    example: ClassVar[str] = """\
- dedup: {key: .data.order_id, window: 1h}
"""

    key: str = Field(description="jq over the event's JSON form, e.g. .data.order_id")
    window: Duration = Field(3600.0, description="how long a key is remembered")
    engine: EngineName = Field(DEFAULT_ENGINE, description="jq engine: jaq (jaq-rs) or jq (libjq)")


class DedupTable:
    """``table`` is a faust Table (or any mapping in unit tests); ``use_event(e)``
    is a context manager making ``e`` the current faust event."""

    def __init__(
        self,
        table: MutableMapping[str, Any],
        window_s: float,
        use_event: Callable[[Any], AbstractContextManager[None]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.window_ms = int(window_s * 1000)
        self.use_event = use_event
        self.clock = clock
        self._order: dict[int, deque[tuple[int, str]]] = {}
        self._indexed = False
        self._last_sweep = 0.0

    @staticmethod
    def key(source: str, id: str) -> str:
        return f"{source}\x00{id}"

    def seen(self, key: str) -> bool:
        v = self.table.get(key)
        if v is None:
            return False
        return int(self.clock() * 1000) - int(v[0]) < self.window_ms

    def mark(self, key: str, partition: int) -> None:
        """Caller has made a record of ``partition`` the current event."""
        now = int(self.clock() * 1000)
        self.table[key] = [now, partition]
        self._order.setdefault(partition, deque()).append((now, key))

    def _index(self) -> None:
        """After recovery the table holds entries this process did not write."""
        entries: list[tuple[int, int, str]] = []
        for key, v in list(self.table.items()):
            try:
                entries.append((int(v[1]), int(v[0]), key))
            except (TypeError, ValueError, IndexError):
                continue
        entries.sort(key=lambda e: e[1])
        for part, ts, key in entries:
            self._order.setdefault(part, deque()).append((ts, key))
        self._indexed = True

    def expire(self, events_by_partition: dict[int, Any], *, every_s: float = 5.0) -> int:
        """Delete expired entries of the partitions in this batch (at most every
        ``every_s``); returns how many were deleted."""
        now_s = self.clock()
        if now_s - self._last_sweep < every_s:
            return 0
        self._last_sweep = now_s
        if not self._indexed:
            self._index()
        cutoff = int(now_s * 1000) - self.window_ms
        n = 0
        for part, event in events_by_partition.items():
            q = self._order.get(part)
            if not q:
                continue
            with self.use_event(event):
                while q and q[0][0] < cutoff:
                    ts, key = q.popleft()
                    v = self.table.get(key)
                    if v is not None and int(v[0]) == ts:
                        del self.table[key]
                        n += 1
        return n

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)
