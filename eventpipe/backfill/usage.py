"""What a backfill process used: cores it may run on, peak RSS, CPU time, and the
time its batches spent per pipeline stage (from the pipeline metrics), so a
report (and bench/backfill.py) can say where the time went."""

from __future__ import annotations

import os
import resource
from typing import Any

from eventpipe import metrics


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def peak_rss_mb() -> float:
    """This process's peak resident set (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """User + system CPU seconds of this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def stage_seconds(pipeline: str) -> dict[str, float]:
    """Seconds this process's batches spent per stage (decode, validation, each run
    of steps) and per sink (a sink's are wall time: waiting for the database or the
    broker included), summed over batches."""
    out: dict[str, float] = {}
    for histogram, label, prefix in (
        (metrics.PIPELINE_STEP_SECONDS, "step", ""),
        (metrics.PIPELINE_SINK_BATCH_SECONDS, "sink", "sink "),
    ):
        for family in histogram.collect():
            for s in family.samples:
                if s.name.endswith("_sum") and s.labels.get("pipeline") == pipeline and s.value:
                    key = prefix + s.labels[label]
                    out[key] = out.get(key, 0.0) + s.value
    return out


def usage(pipeline: str) -> dict[str, Any]:
    return {
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cpu_s": round(cpu_s(), 2),
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds(pipeline).items()},
    }
