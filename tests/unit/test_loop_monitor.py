"""The loop monitor records how late the event loop ran its timer and the cyclic
GC's pauses, as metrics (what bench/webhook.py reads to explain a latency tail)."""

from __future__ import annotations

import asyncio
import gc
import time

from eventpipe import metrics
from eventpipe.loop_monitor import LoopMonitor


def _sample(histogram: object, suffix: str) -> float:
    for metric in histogram.collect():  # type: ignore[attr-defined]
        for sample in metric.samples:
            if sample.name.endswith(suffix):
                return float(sample.value)
    return 0.0


def _count(histogram: object) -> float:
    return _sample(histogram, "_count")


def _sum(histogram: object) -> float:
    return _sample(histogram, "_sum")


async def test_a_blocked_loop_shows_as_lag_and_collections_as_pauses() -> None:
    lag = metrics.EVENT_LOOP_LAG_SECONDS
    full = metrics.GC_PAUSE_SECONDS.labels(generation="2")
    monitor = LoopMonitor(interval_s=0.05)
    monitor.start()
    try:
        lag0, lag_sum0, gc0 = _count(lag), _sum(lag), _count(full)
        time.sleep(0.2)  # noqa: ASYNC251  (blocks the loop: past the timer by >= 0.15 s)
        await asyncio.sleep(0.12)  # the late tick, then a punctual one
        gc.collect()
        assert _count(lag) >= lag0 + 2
        assert _sum(lag) - lag_sum0 >= 0.15
        assert _count(full) == gc0 + 1
    finally:
        monitor.stop()
    assert monitor._on_gc not in gc.callbacks
    after = _count(lag)
    await asyncio.sleep(0.12)
    assert _count(lag) == after  # stopped: no more ticks
