"""``eventpipe dlq list|show|stats|replay|discard``: dead letters for operators."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from eventpipe import loop
from eventpipe.cli.common import (
    CliError,
    add_command,
    add_config_args,
    err_console,
    settings_from_args,
)

if TYPE_CHECKING:
    from eventpipe.dlq.ops import Dlq
    from eventpipe.dlq.query import Filters
    from eventpipe.settings import Settings

out = Console(highlight=False, soft_wrap=True)


def _shared(p: argparse.ArgumentParser) -> None:
    add_config_args(p, database=True, kafka=True)


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", help="the pipeline whose dead letters to use")
    p.add_argument("--topic", action="append", help="dead-letter topic (repeatable)")
    p.add_argument("--since", help="RFC 3339 time, date, or age (30m, 2h, 7d)")
    p.add_argument("--until", help="RFC 3339 time, date, or age")
    p.add_argument("--exception", metavar="CLASS", help="exception class (full or short name)")
    p.add_argument("--stage", help="source|decode|validate|transform|sink")
    p.add_argument("--where", metavar="JQ", help="jq predicate over the record (see --json)")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N matching dead letters")
    p.add_argument("--include-discarded", action="store_true", help="also those discarded before")
    p.add_argument(
        "--on-topic-reset",
        choices=["fail", "reset"],
        help="replays / discards recorded for an earlier incarnation of a dead-letter "
        "topic (deleted and created again): fail (default: kafka.on_topic_reset) stops "
        "with an error; reset lets them go",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = add_command(sub, "dlq", "inspect, replay and discard dead letters")
    dsub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    p = add_command(dsub, "list", "a table of dead letters")
    _shared(p)
    _filter_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_list)

    p = add_command(dsub, "show", "one dead letter: headers, error, payload")
    _shared(p)
    p.add_argument("ref", help="topic:partition:offset or the event id")
    p.add_argument("--pipeline", help="the pipeline whose dead letters to use")
    p.add_argument("--topic", action="append", help="dead-letter topic (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_show)

    p = add_command(dsub, "stats", "counts by pipeline, stage and exception")
    _shared(p)
    _filter_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_stats)

    p = add_command(dsub, "replay", "re-produce dead letters to their topic (or --to)")
    _shared(p)
    _filter_args(p)
    p.add_argument("--to", metavar="TOPIC", help="target topic (default: the original)")
    p.add_argument("--patch", metavar="JQ", help="jq program applied to the event first")
    p.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    p.add_argument("--rate", type=float, metavar="N", help="at most N records per second")
    p.add_argument("--force", action="store_true", help="replay records replayed before")
    p.add_argument("--reason", help="why (recorded with each record replayed)")
    _by_arg(p)
    p.set_defaults(func=cmd_replay)

    p = add_command(dsub, "discard", "mark dead letters as dealt with (recorded)")
    _shared(p)
    _filter_args(p)
    p.add_argument("--reason", required=True, help="why (recorded with each record)")
    _by_arg(p)
    p.set_defaults(func=cmd_discard)


def _by_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--by", metavar="NAME", help="who is doing it, recorded (default: the OS user name)"
    )


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "unknown"


def _filters(args: argparse.Namespace) -> Filters:
    from eventpipe.dlq.query import FilterError, Filters, parse_when

    try:
        return Filters(
            pipeline=args.pipeline,
            since=parse_when(args.since, "--since") if args.since else None,
            until=parse_when(args.until, "--until") if args.until else None,
            exception=args.exception,
            stage=args.stage,
            where=args.where,
            limit=args.limit,
            include_discarded=args.include_discarded,
        )
    except FilterError as exc:
        raise CliError(str(exc)) from exc


async def _with_dlq(settings: Settings, fn: Any) -> Any:
    from eventpipe.db.pool import open_pool
    from eventpipe.dlq.ops import Dlq

    pool = await open_pool(settings.database)
    try:
        return await fn(Dlq(settings, pool))
    finally:
        await pool.close()


def _settings(args: argparse.Namespace) -> Settings:
    policy = getattr(args, "on_topic_reset", None)
    return settings_from_args(args, {"kafka": {"on_topic_reset": policy}} if policy else None)


def _run(args: argparse.Namespace, fn: Any) -> Any:
    settings = _settings(args)

    async def go() -> Any:
        from eventpipe.dlq.ops import resolve_topics

        topics = await resolve_topics(settings, args.pipeline, args.topic)
        return await _with_dlq(settings, lambda dlq: fn(dlq, topics))

    return loop.run(go())


def cmd_list(args: argparse.Namespace) -> int:
    filters = _filters(args)
    entries = _run(args, lambda dlq, topics: dlq.select(topics, filters))
    if args.json:
        for e in entries:
            sys.stdout.write(orjson.dumps(e.to_doc()).decode() + "\n")
        return 0
    t = Table(title=f"{len(entries)} dead letter(s)", title_justify="left")
    for col in ("failed at", "pipeline", "stage", "exception", "event id", "type", "ref"):
        t.add_column(col)
    for e in entries:
        t.add_row(
            e.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.letter.pipeline,
            e.letter.stage,
            e.letter.exception_class.rsplit(".", 1)[-1],
            e.event_id or "-",
            e.event_type or "-",
            e.ref,
        )
    out.print(t)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def go() -> Any:
        from eventpipe.dlq.ops import resolve_topics

        topics = await resolve_topics(settings, args.pipeline, args.topic)
        return await _with_dlq(settings, lambda dlq: dlq.find(topics, args.ref))

    entry = loop.run(go())
    if entry is None:
        raise CliError(f"no dead letter {args.ref!r}; use `eventpipe dlq list` to see refs", 1)
    doc = entry.to_doc(full=True)
    if args.json:
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return 0
    d = entry.letter
    out.print(
        f"[bold]{entry.ref}[/]  pipeline [bold]{d.pipeline}[/]  stage {d.stage}"
        f"{'  step ' + d.step if d.step else ''}  attempts {d.attempts}"
    )
    out.print(
        f"origin {d.origin.topic}:{d.origin.partition}:{d.origin.offset}  "
        f"failed {doc['failed_at']}  retriable {d.retriable}"
    )
    out.print(f"[bold red]{d.exception_class}[/]: {d.exception_message}")
    if d.stacktrace:
        out.print(d.stacktrace.rstrip())
    if d.payload_ref is not None:
        found = "" if d.value is not None else " [bold red](not found)[/]"
        out.print(
            f"value ({d.payload_size} bytes) kept in eventpipe.dlq_payloads, "
            f"ref {d.payload_ref}{found}"
        )
    out.print("[bold]headers[/]")
    for k, v in doc["headers"].items():
        out.print(f"  {k}: {v}")
    payload = doc.get("event") if doc.get("event") is not None else doc.get("value")
    out.print("[bold]payload[/]")
    out.print(Syntax(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode(), "json"))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    filters = _filters(args)
    entries = _run(args, lambda dlq, topics: dlq.select(topics, filters))
    from eventpipe.dlq.ops import stats

    s = stats(entries)
    if args.json:
        sys.stdout.write(orjson.dumps(s).decode() + "\n")
        return 0
    out.print(f"{s['total']} dead letter(s); oldest {s['oldest']}, newest {s['newest']}")
    for title, key in (
        ("pipeline", "by_pipeline"),
        ("stage", "by_stage"),
        ("exception", "by_exception"),
    ):
        t = Table(title=f"by {title}", title_justify="left")
        t.add_column(title)
        t.add_column("count", justify="right")
        for k, v in s[key].items():
            t.add_row(k, str(v))
        out.print(t)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    filters = _filters(args)
    if args.rate is not None and args.rate <= 0:
        raise CliError("--rate must be a positive number of records per second")
    settings = _settings(args)

    async def go() -> Any:
        from eventpipe.dlq.ops import resolve_topics

        topics = await resolve_topics(settings, args.pipeline, args.topic)

        async def work(dlq: Dlq) -> Any:
            entries = await dlq.select(topics, filters)
            progress = Progress(
                TextColumn("replaying"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
            )
            with progress:
                task = progress.add_task("replay", total=len(entries))
                return await dlq.replay(
                    topics,
                    entries,
                    to=args.to,
                    patch=args.patch,
                    dry_run=args.dry_run,
                    rate=args.rate,
                    force=args.force,
                    progress=lambda n: progress.advance(task, n),
                    who=_who(args),
                    reason=args.reason,
                )

        return await _with_dlq(settings, work)

    report = loop.run(go())
    if args.dry_run:
        for item in report.planned:
            sys.stdout.write(orjson.dumps(item).decode() + "\n")
        err_console.print(
            f"dry run: {len(report.planned)} record(s) would be replayed, "
            f"{report.skipped_replayed} already replayed (use --force), "
            f"{len(report.failed)} cannot be"
        )
    else:
        err_console.print(
            f"replayed {report.replayed}, skipped {report.skipped_replayed} "
            f"already replayed, failed {len(report.failed)}"
        )
    for ref, why in report.failed[:20]:
        err_console.print(f"  {ref}: {why}")
    return 1 if report.failed else 0


def cmd_discard(args: argparse.Namespace) -> int:
    filters = _filters(args)

    async def fn(dlq: Dlq, topics: list[str]) -> int:
        return await dlq.discard(await dlq.select(topics, filters), args.reason, _who(args))

    n = _run(args, fn)
    err_console.print(f"discarded {n} record(s)")
    return 0
