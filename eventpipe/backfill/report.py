"""The final report of a job: a dict (stored on the job, printed by ``--json``)
and its rendering for people."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from .job import Job


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


def build_report(
    job: Job,
    *,
    run_seconds: float,
    run_read: int,
    destination: str | None = None,
    samples: dict[str, Any] | None = None,
    comparison: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``run``: facts of this run (worker processes, peak RSS, the window held)."""
    counts = job.totals().as_dict()
    report: dict[str, Any] = {
        "job": job.id,
        "pipeline": job.pipeline,
        "mode": job.mode,
        "source": job.source,
        "from": _iso(job.start),
        "to": _iso(job.end),
        "requested_to": _iso(job.requested_end),
        "status": job.status,
        "runs": job.runs,
        "counts": counts,
        "sinks": job.sink_totals(),
        "duration_s": round(run_seconds, 3),
        "total_duration_s": round(job.active_seconds + run_seconds, 3),
        "events_per_s": round(run_read / run_seconds, 1) if run_seconds > 0 else None,
        "consumer_group": job.consumer_group,
        **(run or {}),
        "partitions": [
            {
                "stream": p.stream,
                "partition": p.partition,
                "start": p.start_offset,
                "next": p.next_offset,
                "done": p.done,
                **p.counts.as_dict(),
            }
            for p in job.partitions
        ],
    }
    if destination:
        report["destination"] = destination
    if samples is not None:
        report["samples"] = samples
    if comparison is not None:
        report["comparison"] = comparison
    return report


_LABELS = [
    ("read", "read (in range)"),
    ("outputs", "events produced"),
    ("delivered", "delivered"),
    ("filtered", "filtered out by steps"),
    ("dead_lettered", "dead-lettered"),
    ("already_dead_lettered", "failed again, dead-lettered before (not written again)"),
    ("already_replayed", "  of which replayed before"),
    ("duplicates", "skipped as duplicates"),
    ("outside", "skipped, outside the range"),
]


def render(report: dict[str, Any], console: Console) -> None:
    mode = report["mode"]
    console.print(
        f"[bold]backfill {report['job']}[/] pipeline [bold]{report['pipeline']}[/] "
        f"({mode}, from {report['source']}) {report['from']} .. {report['to']}: "
        f"[bold]{report['status']}[/]"
    )
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(justify="left")
    t.add_column(justify="right")
    counts = report["counts"]
    for key, label in _LABELS:
        if key == "delivered" and mode == "dry_run":
            label = "would be delivered (dry run)"
        elif key == "delivered" and mode == "shadow":
            label = "written to the shadow topic"
        t.add_row(label, f"{counts.get(key, 0):,}")
    rate = report.get("events_per_s")
    t.add_row(
        "duration",
        f"{report['duration_s']:.1f}s" + (f" ({rate:,.0f} events/s)" if rate else ""),
    )
    console.print(t)
    if report.get("destination"):
        console.print(f"  {report['destination']}")
    for name, c in sorted(report.get("sinks", {}).items()):
        if mode == "live":
            console.print(
                f"  sink {name}: delivered {c.get('delivered', 0):,}, "
                f"skipped as duplicates {c.get('skipped', 0):,}"
            )
        else:
            verb = "would get" if mode == "dry_run" else "got"
            console.print(f"  {name}: {verb} {c.get('delivered', 0):,} record(s)' outputs")
    samples = report.get("samples")
    if samples:
        for sink, docs in samples.get("outputs", {}).items():
            console.print(f"  sample outputs for {sink}:")
            for d in docs:
                console.print("    " + orjson.dumps(d).decode()[:400], markup=False)
        for d in samples.get("dead_letters", []):
            console.print(
                f"  dead letter {d['origin']} at {d['stage']}"
                + (f" ({d['step']})" if d.get("step") else "")
                + f": {d['exception'].rsplit('.', 1)[-1]}: {d['message'][:200]}",
                markup=False,
            )
    comp = report.get("comparison")
    if comp and (comp.get("live_topics") or not comp.get("tables")):
        console.print(
            f"  shadow vs live ({', '.join(comp['live_topics']) or 'no live topic'}): "
            f"shadow {comp['shadow']:,}, live {comp['live']:,}, same {comp['same']:,}, "
            f"missing {comp['missing']:,}, extra {comp['extra']:,}, changed {comp['changed']:,}"
        )
        if comp.get("note"):
            console.print(f"  note: {comp['note']}")
        for kind in ("missing", "extra", "changed"):
            for ex in comp["examples"].get(kind, []):
                console.print(f"    {kind}: " + orjson.dumps(ex).decode()[:400], markup=False)
    for table in (comp or {}).get("tables", []):
        _render_table(table, console)
    if report["status"] == "interrupted":
        console.print(f"  resume with: eventpipe backfill --resume {report['job']}")


_TABLE_KINDS = {
    "added": "added",
    "changed": "changed",
    "unchanged": "unchanged",
    "older": "kept (the row is newer: order_by)",
    "removed": "would be deleted",
    "absent": "not there",
}


def _render_table(t: dict[str, Any], console: Console) -> None:
    how = t["mode"] + (f" on {', '.join(t['key'])}" if t.get("key") else "")
    counts = ", ".join(f"{label} {t[kind]:,}" for kind, label in _TABLE_KINDS.items() if kind in t)
    console.print(
        f"  shadow vs table {t['table']} (sink {t['sink']}, {how}): {t['rows']:,} row(s): {counts}",
        markup=False,
    )
    for kind, examples in t.get("examples", {}).items():
        for ex in examples:
            console.print(f"    {kind}: " + orjson.dumps(ex).decode()[:400], markup=False)
