"""What the benchmarks share: the stack, percentiles, peak RSS, a results table."""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from eventpipe.embedded.stack import EmbeddedStack

console = Console(highlight=False)


@contextlib.contextmanager
def bench_stack(*, fast: bool = True) -> Iterator[EmbeddedStack]:
    """Embedded PostgreSQL + Tansu (or EVENTPIPE_* external ones), with migrations.
    ``fast`` turns PostgreSQL's fsync off (throughput benchmarks); ``fast=False`` is
    the database as ``eventpipe dev`` starts it."""
    import asyncio

    from eventpipe.db.migrations import apply_migrations

    data = Path(tempfile.mkdtemp(prefix="eventpipe-bench-"))
    with EmbeddedStack(data, 0, 0, fast=fast) as stack:
        asyncio.run(apply_migrations(stack.database_url))
        yield stack


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary_ms(latencies_s: list[float]) -> str:
    ms = [v * 1000 for v in latencies_s]
    return (
        f"p50 {percentile(ms, 50):.2f} ms  p99 {percentile(ms, 99):.2f} ms  "
        f"mean {statistics.fmean(ms):.2f} ms"
    )


def self_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pid_peak_rss_mb(pid: int) -> float:
    """VmHWM of another process (its peak resident set), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="right" if c != columns[0] else "left")
    for r in rows:
        t.add_row(*r)
    console.print(t)


def cpu_note() -> str:
    return f"{os.cpu_count()} cores; broker and database on the same machine"


def run_on_stack(
    run: Callable[[str, str], Coroutine[Any, Any, None]], *, fast: bool = True
) -> None:
    """Run ``run(bootstrap, database_url)`` on the external services named by
    EVENTPIPE_KAFKA_BOOTSTRAP / EVENTPIPE_DATABASE_URL, else on an embedded stack."""
    from eventpipe import loop

    external = os.environ.get("EVENTPIPE_KAFKA_BOOTSTRAP")
    if external and os.environ.get("EVENTPIPE_DATABASE_URL"):
        loop.run(run(external, os.environ["EVENTPIPE_DATABASE_URL"]))
        return
    with bench_stack(fast=fast) as stack:
        loop.run(run(stack.bootstrap, stack.database_url))
