"""What every command shares: loading settings, and turning errors into messages."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape

from eventpipe.errors import ConfigError, EventpipeError
from eventpipe.logs import setup_logging
from eventpipe.service.config import ServiceConfig, load_config

err_console = Console(stderr=True, highlight=False)


class CliError(Exception):
    """A message for the user that names the fix; exit status ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML config file (EVENTPIPE_* env vars override it)")
    p.add_argument(
        "--bootstrap",
        help="Kafka bootstrap servers (default: kafka.bootstrap, EVENTPIPE_KAFKA_BOOTSTRAP)",
    )


def settings_from_args(
    args: argparse.Namespace, extra: Mapping[str, Mapping[str, Any]] | None = None
) -> ServiceConfig:
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (extra or {}).items()}
    if getattr(args, "bootstrap", None):
        overrides.setdefault("kafka", {})["bootstrap"] = args.bootstrap
    return load_config(getattr(args, "config", None), overrides=overrides)


def report(exc: BaseException) -> int:
    if isinstance(exc, CliError):
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        return exc.code
    if isinstance(exc, ConfigError):
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 2
    if isinstance(exc, EventpipeError):
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 3 if exc.retriable else 2
    raise exc


__all__ = [
    "CliError",
    "add_config_args",
    "err_console",
    "report",
    "settings_from_args",
    "setup_logging",
]
