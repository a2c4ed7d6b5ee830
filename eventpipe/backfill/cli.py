"""``eventpipe backfill``: push a time range of history through a pipeline again.

    eventpipe backfill -c eventpipe.yaml --pipeline orders --from 2026-11-01 \\
        --to 2026-11-02T12:00:00Z --mode shadow --rate 2000/s --concurrency 4
    eventpipe backfill -c eventpipe.yaml --resume bf-0123456789ab

Arguments are checked (times, range, pipeline, mode, source tables) before
anything connects.  Exit status: 0 done, 2 bad arguments or config, 3 the
broker or database is unreachable, 130 interrupted (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING, Any

from eventpipe.cli.common import add_command, add_config_args

if TYPE_CHECKING:
    from .job import Job

# The backfill machinery (pipelines, sinks, faust) is imported when the command runs,
# so other commands start quickly.


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "backfill",
        "push a time range of history through a pipeline again",
        description="Read a pipeline's source topics (or its CDC tables) over a time range "
        "and run them through its steps and validation: to its sinks (live), to "
        "<pipeline>.shadow with a comparison against the live output (shadow), or "
        "nowhere, counting and sampling (dry_run).",
    )
    add_config_args(p, database=True, kafka=True)
    p.add_argument("--pipeline", help="the pipeline to backfill")
    p.add_argument(
        "--from",
        dest="start",
        metavar="T1",
        help="start, inclusive: RFC 3339, a date, or an age (2h, 7d)",
    )
    p.add_argument("--to", dest="end", metavar="T2", help="end, exclusive (same forms)")
    p.add_argument("--mode", default="dry_run", help="dry_run (default) | shadow | live")
    p.add_argument(
        "--source",
        default="topic",
        help="topic (default): the source topics; table: the CDC source's tables",
    )
    p.add_argument("--rate", metavar="N/s", help="at most N events per second")
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="partitions (or tables) each process reads at once (default 4)",
    )
    p.add_argument(
        "--workers",
        metavar="N|auto",
        help="worker processes sharing the job's partitions (or tables); auto: one per "
        "core (default 1; on --resume, what the job ran with)",
    )
    p.add_argument(
        "--resume",
        metavar="JOB_ID",
        help="continue an interrupted job (its pipeline, range, mode and source apply)",
    )
    p.add_argument(
        "--time-column",
        default="updated_at",
        help="--source table: the timestamp column to filter on (default updated_at)",
    )
    p.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="SCHEMA.TABLE",
        help="--source table: only these tables (repeatable)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=5,
        help="examples kept per sink / kind of difference (default 5)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="live: deliver even what the live pipeline or an earlier backfill delivered "
        "(a sink that lost data); sinks that do not dedupe may then hold duplicates",
    )
    p.add_argument(
        "--allow-overwrite",
        action="store_true",
        help="live: run even though an upsert sink has no order_by column, letting the "
        "range's older events overwrite newer rows",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_backfill)


def cmd_backfill(args: argparse.Namespace) -> int:
    from eventpipe import loop
    from eventpipe.cli.common import err_console, settings_from_args, setup_logging
    from eventpipe.service.catalog import CATALOG

    from .options import check_request
    from .progress import make_view
    from .runner import Backfill, open_context, resolve_request

    req = check_request(
        pipeline=args.pipeline,
        start=args.start,
        end=args.end,
        mode=args.mode,
        source=args.source,
        rate=args.rate,
        concurrency=args.concurrency,
        resume=args.resume,
        time_column=args.time_column,
        tables=args.table,
        samples=args.samples,
        force=args.force,
        allow_overwrite=args.allow_overwrite,
        workers=args.workers,
    )
    settings = settings_from_args(args)
    resolve_request(settings, req, CATALOG)  # unknown pipeline, no CDC tables: before connecting
    setup_logging("WARNING")
    view = make_view(err_console, enabled=not args.no_progress)
    holder: dict[str, Any] = {}

    def announce(job: Job) -> None:
        holder["job"] = job.id
        if job.status == "completed":
            err_console.print(f"job {job.id} was completed before; its report:", soft_wrap=True)
            return
        err_console.print(
            f"backfill job {job.id}: pipeline {job.pipeline}, {job.mode}, from {job.source}, "
            f"{job.start.isoformat()} .. {job.end.isoformat()} "
            f"(interrupt and continue with --resume {job.id})",
            soft_wrap=True,
        )

    async def go() -> dict[str, Any]:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        ctx = await open_context(settings, CATALOG)
        try:
            bf = Backfill(ctx, req, view=view)
            bf.on_job = announce
            holder["backfill"] = bf
            return await bf.run()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            await ctx.close()

    try:
        report = loop.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        bf = holder.get("backfill")
        partial = bf.last_report if bf is not None else None
        if partial is not None:
            _print(partial, args.json)
        elif "job" in holder:
            err_console.print(f"interrupted; continue with --resume {holder['job']}")
        return 130
    _print(report, args.json)
    return 0


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(report).decode() + "\n")
        sys.stdout.flush()
    else:
        from rich.console import Console

        from .report import render

        render(report, Console(highlight=False, soft_wrap=True))
