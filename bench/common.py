"""What the benchmarks share: the stack, percentiles, peak RSS, a results table."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import statistics
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
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
    try:
        with EmbeddedStack(data, 0, 0, fast=fast) as stack:
            asyncio.run(apply_migrations(stack.database_url))
            yield stack
    finally:
        shutil.rmtree(data, ignore_errors=True)  # up to 2 GB after a 1M-event benchmark


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


# ------------------------------------------------------------ the trace index
# BENCH_TRACE=both (default): the hot paths run with the trace index off and on,
# interleaved, BENCH_TRACE_ROUNDS times each, and the cost is printed as a ratio;
# on / off: everything runs one way (the service's default is on).
TRACE_MODE = os.environ.get("BENCH_TRACE", "both")
if TRACE_MODE not in ("both", "on", "off"):
    raise SystemExit(f"BENCH_TRACE={TRACE_MODE!r}: use both, on or off")
TRACE_ROUNDS = int(os.environ.get("BENCH_TRACE_ROUNDS", "3"))
TRACE_TARGET = 0.95  # the hot path keeps at least 95% of its throughput


def trace_enabled() -> bool:
    """Whether the benchmark's main runs index (as the service does by default)."""
    return TRACE_MODE != "off"


def trace_env() -> dict[str, str]:
    """Environment for an ``eventpipe run`` process of the main runs."""
    return {"EVENTPIPE_TRACE_ENABLED": "true" if trace_enabled() else "false"}


@dataclass
class Sample:
    """One round of a path: events/s, and CPU time of eventpipe's process per event."""

    rate: float
    cpu_us: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def trace_cost_table(title: str, rows: list[tuple[str, list[Sample], list[Sample]]]) -> None:
    """``(path, rounds with the index off, rounds with it on)``: the best round of
    each, as events/s and as eventpipe's CPU time per event, and their ratios.  On a
    shared machine the rate of a round swings by more than the index costs, while CPU
    time per event moves much less: the target is judged on it (the throughput a
    CPU-bound process keeps is the inverse ratio of its CPU time per event)."""
    out = []
    for path, off, on in rows:
        rate_off, rate_on = max(s.rate for s in off), max(s.rate for s in on)
        cpu_off, cpu_on = min(s.cpu_us for s in off), min(s.cpu_us for s in on)
        kept = cpu_off / cpu_on
        out.append(
            [
                path,
                f"{rate_off:,.0f}",
                f"{rate_on:,.0f}",
                f"{rate_on / rate_off:.3f}x",
                f"{cpu_off:.1f}",
                f"{cpu_on:.1f}",
                f"{kept:.3f}x",
                f">= {TRACE_TARGET:.2f}x: {'met' if kept >= TRACE_TARGET else 'MISSED'}",
            ]
        )
    table(
        title,
        [
            "path",
            "events/s off (peer)",
            "events/s on",
            "ratio",
            "CPU us/event off",
            "on",
            "throughput kept (CPU off/on)",
            "target",
        ],
        out,
    )
    for path, off, on in rows:
        console.print(
            f"{path}, best of {len(off)} interleaved rounds: off "
            + ", ".join(f"{s.rate:,.0f}/s {s.cpu_us:.1f} us" for s in off)
            + "; on "
            + ", ".join(f"{s.rate:,.0f}/s {s.cpu_us:.1f} us" for s in on)
        )


# ------------------------------------------------- a service's own histograms
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of a service's ``/metrics``: (name, labels) -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return out


@dataclass
class Hist:
    """What a histogram gained between two scrapes."""

    count: float
    total: float  # seconds
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count)

    @property
    def mean_ms(self) -> float:
        return self.total / self.count * 1000 if self.count else float("nan")

    def p_ms(self, q: float) -> float:
        """The bucket bound at or below which ``q`` % of the observations fell."""
        if not self.count:
            return float("nan")
        for bound, cumulative in self.buckets:
            if cumulative >= self.count * q / 100:
                return bound * 1000
        return float("inf")


def hist_delta(before: Samples, after: Samples, name: str, **labels: str) -> Hist:
    """Histogram ``name`` (summed over series whose labels include ``labels``)
    between two scrapes."""
    want = set(labels.items())

    def total(suffix: str, le: str | None = None) -> float:
        n = 0.0
        for (sample, lbls), v in after.items():
            if sample != name + suffix or not want <= lbls:
                continue
            if le is not None and ("le", le) not in lbls:
                continue
            n += v - before.get((sample, lbls), 0.0)
        return n

    bounds = sorted(
        {dict(lbls)["le"] for (s, lbls) in after if s == name + "_bucket" and want <= lbls},
        key=float,
    )
    buckets = [(float(le), total("_bucket", le)) for le in bounds]
    return Hist(total("_count"), total("_sum"), buckets)
