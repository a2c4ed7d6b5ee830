"""``eventpipe`` command line: dev, run, check, status, publish, tail, migrate, dlq,
backfill, trace."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from eventpipe import __version__
from eventpipe.backfill import cli as backfill_cli
from eventpipe.cli import cdc, check, dev, dlq, publish, run, status, tail
from eventpipe.cli.common import report
from eventpipe.schema_registry import cli as schema_registry_cli
from eventpipe.trace import cli as trace_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventpipe",
        description="CloudEvents on Kafka: publish, ingest, capture, transform, deliver.",
    )
    parser.add_argument("--version", action="version", version=f"eventpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = (
        dev,
        run,
        check,
        status,
        publish,
        tail,
        schema_registry_cli,
        cdc,
        dlq,
        backfill_cli,
        trace_cli,
    )
    for module in modules:
        module.register(sub)
    run.register_migrate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return report(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def console_main() -> None:
    sys.exit(main())
