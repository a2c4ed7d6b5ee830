"""The workers' ``/metrics`` and ``/v1/status`` as one.

Metrics: the supervisor reads each worker's ``/metrics`` on its private port and
merges them, as prometheus-client's multiprocess mode does by default: counters,
histograms and summaries summed over the workers (``eventpipe_..._total`` is the
service's total), gauges kept per worker with a ``worker`` label (a lag or a
queue depth does not add up).  A worker that restarts starts its counters from
zero; what it had counted (as of the last scrape before it died) is carried into
the sum, so the service's counters never go down.  ``*_created`` series are left
out: the creation time of a sum is no worker's.

Why scrape and merge rather than prometheus-client's multiprocess mode: that mode
must be switched on (``PROMETHEUS_MULTIPROC_DIR``) before prometheus-client is
imported in every process, stores every metric in memory-mapped files written on
each increment, needs every gauge declared with a multiprocess mode, drops custom
collectors, and leaves a dead worker's files to clean up; and one worker alone
(``--workers 1``) would change too.  Scraping leaves the workers exactly as a
single process is, each worker's own ``/metrics`` stays readable on its port, and
the merge is a pure function of texts (tested without processes).

Status: every worker's ``/v1/status`` components, each with its ``worker`` index,
and a ``workers`` list (state, pid, restarts, last exit); ``ok`` only when every
worker runs and none needs attention.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

SUMMED = frozenset({"counter", "histogram", "summary"})
LabelKey = tuple[tuple[str, str], ...]
SampleKey = tuple[str, LabelKey]


@dataclass
class Family:
    name: str
    type: str
    doc: str
    samples: dict[SampleKey, float] = field(default_factory=dict)


Families = dict[str, Family]


def parse(text: str) -> Families:
    """A worker's exposition, without its ``*_created`` series."""
    out: Families = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.endswith("_created") and fam.type == "unknown":
            continue
        f = out.setdefault(fam.name, Family(fam.name, fam.type, fam.documentation))
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            f.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _add(into: Families, fams: Families) -> None:
    for name, fam in fams.items():
        if fam.type not in SUMMED:
            continue
        f = into.setdefault(name, Family(name, fam.type, fam.doc))
        for key, value in fam.samples.items():
            f.samples[key] = f.samples.get(key, 0.0) + value


class MetricsMerger:
    """The last scrape of each worker (by the pid that answered), and what the
    worker's earlier processes had counted."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[int, Families]] = {}
        self._carried: dict[int, Families] = {}

    def observe(self, worker: int, pid: int, text: str) -> None:
        """``text``: the ``/metrics`` answer of worker ``worker``'s process ``pid``."""
        last = self._last.get(worker)
        if last is not None and last[0] != pid:  # a new process: keep the old counts
            _add(self._carried.setdefault(worker, {}), last[1])
        self._last[worker] = (pid, parse(text))

    def merged(self, answered: Iterable[int]) -> Families:
        """Counters summed over every worker (the last scrape of those that did not
        answer now, and what earlier processes counted); gauges of the workers in
        ``answered`` only, labelled with their index."""
        now = set(answered)
        out: Families = {}
        for worker in sorted(self._carried):
            _add(out, self._carried[worker])
        for worker, (_pid, fams) in sorted(self._last.items()):
            _add(out, fams)
            if worker not in now:
                continue
            for name, fam in fams.items():
                if fam.type in SUMMED:
                    continue
                f = out.setdefault(name, Family(name, fam.type, fam.doc))
                for (sample, labels), value in fam.samples.items():
                    f.samples[(sample, (*labels, ("worker", str(worker))))] = value
        return out


class _Collector:
    def __init__(self, families: Iterable[Family]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        for fam in self.families:
            metric = Metric(fam.name, fam.doc, fam.type)
            for (sample, labels), value in fam.samples.items():
                metric.add_sample(sample, dict(labels), value)
            yield metric


def exposition(families: Iterable[Family]) -> bytes:
    """The Prometheus text format of ``families``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families))
    return generate_latest(registry)


def supervisor_families(workers: Iterable[Mapping[str, Any]]) -> list[Family]:
    """The supervisor's own: restarts and whether each worker serves."""
    restarts = Family(
        "eventpipe_worker_restarts", "counter", "Times the supervisor restarted a worker"
    )
    up = Family("eventpipe_worker_up", "gauge", "1 while the worker process serves, else 0")
    for w in workers:
        labels = (("worker", str(w["worker"])),)
        restarts.samples[("eventpipe_worker_restarts_total", labels)] = float(w["restarts"])
        up.samples[("eventpipe_worker_up", labels)] = 1.0 if w["state"] == "running" else 0.0
    return [restarts, up]


# ------------------------------------------------------------------- status
def merge_status(
    workers: list[dict[str, Any]], answers: Mapping[int, dict[str, Any]], at: str
) -> dict[str, Any]:
    """One ``/v1/status`` from the workers' (``answers``: index -> its answer; a
    worker that is not running, or did not answer, has none)."""
    components: list[dict[str, Any]] = []
    attention: list[str] = []
    for w in workers:
        i = w["worker"]
        snap = answers.get(i)
        if snap is None:
            attention.append(f"worker {i}: {w['state']}")
            continue
        for entry in snap.get("components", []):
            components.append({**entry, "worker": i})
        attention.extend(f"worker {i}: {check}" for check in snap.get("attention", []))
    return {
        "ok": not attention,
        "attention": attention,
        "at": at,
        "workers": workers,
        "components": components,
    }


__all__ = [
    "Family",
    "MetricsMerger",
    "exposition",
    "merge_status",
    "parse",
    "supervisor_families",
]
