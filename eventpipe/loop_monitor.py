"""How well the process keeps up: the event loop's lag and the cyclic garbage
collector's pauses, as metrics (``eventpipe_event_loop_lag_seconds``,
``eventpipe_gc_pause_seconds``).  A request or batch that waits longer than its
own work explains is most often waiting for the loop (other tasks' work, a
collection): these two tell which.

The lag is sampled with one timer every ``interval_s`` (0.1 s: ten wake-ups a
second, nothing an idle service notices): how late it ran is how long any task
ready then waited.  GC pauses come from ``gc.callbacks`` (every thread's: a
collection holds the interpreter)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from eventpipe import metrics

log = logging.getLogger(__name__)


class LoopMonitor:
    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gc_started = 0.0
        self._lag = metrics.EVENT_LOOP_LAG_SECONDS
        self._pauses = [metrics.GC_PAUSE_SECONDS.labels(generation=str(g)) for g in range(3)]

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._schedule()
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        """Idempotent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _schedule(self) -> None:
        loop = self._loop
        if loop is not None:
            due = loop.time() + self.interval_s
            self._handle = loop.call_at(due, self._tick, due)

    def _tick(self, due: float) -> None:
        loop = self._loop
        if loop is None:
            return
        self._lag.observe(max(0.0, loop.time() - due))
        self._schedule()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self._pauses[min(2, int(info.get("generation", 2)))].observe(
                time.perf_counter() - self._gc_started
            )
