"""What a backfill is asked to do, checked before anything connects.

Every argument problem names its flag (``--to: is before --from``), so a typo
never starts a job.  Times use the same forms as ``eventpipe dlq``: RFC 3339, a
date, or an age (:func:`eventpipe.dlq.query.parse_when`), and ``now``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast, get_args

from eventpipe.dlq.query import FilterError, parse_when
from eventpipe.errors import PermanentError
from eventpipe.pipelines.spec import PipelineSpec, SinkCatalog, build_sinks, parse_pipelines
from eventpipe.settings import Settings

Mode = Literal["dry_run", "shadow", "live"]
SourceKind = Literal["topic", "table"]
MODES: tuple[str, ...] = get_args(Mode)
SOURCES: tuple[str, ...] = get_args(SourceKind)
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*s)?\s*$")
_JOB_ID = re.compile(r"^bf-[0-9a-f]{12}$")


class BackfillError(PermanentError):
    """A backfill cannot run as asked; the message names the flag or the fix."""


class BackfillArgumentError(BackfillError):
    def __init__(self, flag: str, reason: str) -> None:
        self.flag = flag
        super().__init__(f"{flag}: {reason}")


@dataclass(frozen=True)
class BackfillRequest:
    """A checked request.  ``start`` / ``end`` are None only when resuming."""

    pipeline: str | None
    start: datetime | None
    end: datetime | None
    mode: Mode = "dry_run"
    source: SourceKind = "topic"
    rate: float | None = None
    concurrency: int = 4
    resume: str | None = None
    time_column: str = "updated_at"
    tables: tuple[str, ...] = ()
    samples: int = 5
    force: bool = False
    allow_overwrite: bool = False
    workers: int | None = None  # worker processes; 0: one per core; None: 1 (resume: as before)


def parse_workers(value: str | int | None) -> int | None:
    """``auto`` -> 0 (one per core), ``N`` -> N, None stays None."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return 0
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 1 <= n <= 256:
        raise BackfillArgumentError(
            "--workers", f"{value!r} is not a number of processes (1-256) or auto"
        )
    return n


def parse_rate(value: str | None) -> float | None:
    """``500`` or ``500/s`` -> 500.0; None stays None."""
    if value is None:
        return None
    m = _RATE.match(value)
    if not m or float(m.group(1)) <= 0:
        raise BackfillArgumentError(
            "--rate", f"{value!r} is not a positive rate; use events per second, e.g. 500 or 500/s"
        )
    return float(m.group(1))


def _when(value: str, flag: str, now: datetime) -> datetime:
    if value.strip().lower() == "now":
        return now
    try:
        return parse_when(value, flag, now=now)
    except FilterError as exc:
        raise BackfillArgumentError(flag, str(exc).removeprefix(f"{flag}: ")) from None


def check_request(
    *,
    pipeline: str | None,
    start: str | None,
    end: str | None,
    mode: str = "dry_run",
    source: str = "topic",
    rate: str | None = None,
    concurrency: int = 4,
    resume: str | None = None,
    time_column: str = "updated_at",
    tables: tuple[str, ...] | list[str] = (),
    samples: int = 5,
    force: bool = False,
    allow_overwrite: bool = False,
    workers: str | int | None = None,
    now: datetime | None = None,
) -> BackfillRequest:
    """Check the flags on their own (no config, no connections)."""
    now = now or datetime.now(UTC)
    if mode not in MODES:
        raise BackfillArgumentError("--mode", f"{mode!r} is not one of {', '.join(MODES)}")
    if source not in SOURCES:
        raise BackfillArgumentError("--source", f"{source!r} is not one of {', '.join(SOURCES)}")
    if resume is not None and not _JOB_ID.match(resume):
        raise BackfillArgumentError(
            "--resume", f"{resume!r} is not a backfill job id (they look like bf-0123456789ab)"
        )
    if resume is None:
        if not pipeline:
            raise BackfillArgumentError("--pipeline", "is required (the pipeline to backfill)")
        if start is None:
            raise BackfillArgumentError("--from", "is required (RFC 3339, a date, or an age)")
        if end is None:
            raise BackfillArgumentError("--to", "is required (RFC 3339, a date, or an age)")
    t1 = _when(start, "--from", now) if start is not None else None
    t2 = _when(end, "--to", now) if end is not None else None
    if t1 is not None and t2 is not None and t2 <= t1:
        what = "is before" if t2 < t1 else "equals"
        raise BackfillArgumentError(
            "--to", f"{t2.isoformat()} {what} --from {t1.isoformat()}; the range would be empty"
        )
    if t1 is not None and t1 >= now:
        raise BackfillArgumentError(
            "--from", f"{t1.isoformat()} is in the future; there is nothing to backfill yet"
        )
    if concurrency < 1 or concurrency > 256:
        raise BackfillArgumentError("--concurrency", "must be between 1 and 256")
    if samples < 0 or samples > 1000:
        raise BackfillArgumentError("--samples", "must be between 0 and 1000")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$", time_column):
        raise BackfillArgumentError("--time-column", f"{time_column!r} is not a plain column name")
    if tables and source != "table":
        raise BackfillArgumentError("--table", "only applies with --source table")
    if force and mode != "live":
        raise BackfillArgumentError("--force", "only applies with --mode live")
    if allow_overwrite and mode != "live":
        raise BackfillArgumentError("--allow-overwrite", "only applies with --mode live")
    return BackfillRequest(
        pipeline=pipeline,
        start=t1,
        end=t2,
        mode=cast(Mode, mode),
        source=cast(SourceKind, source),
        rate=parse_rate(rate),
        concurrency=concurrency,
        resume=resume,
        time_column=time_column,
        tables=tuple(tables),
        samples=samples,
        force=force,
        allow_overwrite=allow_overwrite,
        workers=parse_workers(workers),
    )


def find_pipeline(settings: Settings, name: str, sinks: SinkCatalog) -> PipelineSpec:
    """The configured pipeline ``name`` (an unknown one lists those there are)."""
    specs = parse_pipelines(settings.pipelines, sinks)
    for spec in specs:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in specs) or "none are configured"
    raise BackfillArgumentError("--pipeline", f"unknown pipeline {name!r} (known: {known})")


def check_pipeline_for(
    spec: PipelineSpec, mode: Mode, sinks: SinkCatalog, *, allow_overwrite: bool = False
) -> None:
    """What a backfill cannot do with this pipeline."""
    if mode == "live" and not allow_overwrite:
        unguarded = unguarded_upserts(spec, sinks)
        if unguarded:
            raise BackfillArgumentError(
                "--mode",
                f"pipeline {spec.name!r} upserts into {', '.join(unguarded)} without an "
                "ordering column, so a live backfill would overwrite rows the live pipeline "
                "wrote from newer events with older ones; give the sink `order_by: <column>` "
                "(event time, LSN or version, e.g. updated_at: .time), or pass "
                "--allow-overwrite to roll those rows back to the range's values on purpose",
            )
    for i, item in enumerate(spec.steps):
        if isinstance(item, dict) and "aggregate" in item and mode == "live":
            raise BackfillArgumentError(
                "--mode",
                f"pipeline {spec.name!r} has an aggregate step (steps[{i}]): a backfill starts "
                "with empty window state, so its results would overwrite the live ones with "
                "partial counts; use --mode dry_run or shadow",
            )


def unguarded_upserts(spec: PipelineSpec, sinks: SinkCatalog) -> list[str]:
    """The upsert sinks (postgres, an outbox's rows) without ``order_by``, as
    ``sinks[i] (table)``."""
    entries, _ = build_sinks(spec.sinks, path="sinks", sinks=sinks)
    out: list[str] = []
    for e in entries:
        cfg = getattr(e.config, "rows", None) or e.config
        if getattr(cfg, "mode", None) == "upsert" and getattr(cfg, "order_by", None) is None:
            out.append(f"{e.path.rsplit('.', 1)[0]} ({cfg.table})")
    return out
