"""``eventpipe trace EVENT_ID``: what happened to one event.

Exit status 0 when the event was found, 1 when not (saying where it looked), 2
for bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
from rich.console import Console

from eventpipe import loop
from eventpipe.cli.common import CliError, add_command, add_config_args, core_settings_from_args

from . import DEFAULT_SINCE

# What the command reads (PostgreSQL, Kafka) is imported when it runs; it needs the
# config's core sections only, so no plugin is imported (tests/unit/test_cli_imports.py).

# a terminal wraps long lines inside the tree; a pipe gets each line whole
out = Console(highlight=False, width=None if sys.stdout.isatty() else 1000)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "trace",
        "what happened to an event: where it landed and what each pipeline did",
        "Where an event came in (webhook, CDC, publish), the topic, partition and "
        "offset of every record holding it, what each pipeline that read it did "
        "(delivered to which sinks, filtered, duplicate, dead-lettered), replays and "
        "discards of its dead letters, and backfills. Exit status 0 found, 1 not found.",
    )
    add_config_args(p, database=True, kafka=True)
    p.add_argument("event_id", metavar="EVENT_ID", help="the CloudEvent id")
    p.add_argument("--source", help="the CloudEvent source, when ids repeat across sources")
    p.add_argument(
        "--since",
        default=DEFAULT_SINCE,
        help=f"how far back to look: an age (30m, 24h, 7d), a date or RFC 3339 time "
        f"(default {DEFAULT_SINCE})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_trace)


def cmd_trace(args: argparse.Namespace) -> int:
    from eventpipe.db.pool import open_pool
    from eventpipe.dlq.query import FilterError, parse_when

    from .lookup import trace_event
    from .render import not_found, render

    event_id = args.event_id
    if not event_id or not event_id.strip():
        raise CliError("EVENT_ID must not be empty")
    try:
        since = parse_when(args.since, "--since")
    except FilterError as exc:
        raise CliError(str(exc)) from exc
    settings = core_settings_from_args(args)

    async def go() -> dict[str, Any]:
        pool = await open_pool(settings.database, name="eventpipe-trace")
        try:
            trace = await trace_event(settings, pool, event_id, since=since, source=args.source)
        finally:
            await pool.close()
        return trace.to_doc()

    doc = loop.run(go())
    if args.json:
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    elif doc["found"]:
        out.print(render(doc))
    else:
        out.print(not_found(doc), markup=False)
    return 0 if doc["found"] else 1
