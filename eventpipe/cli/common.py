"""What every command shares: loading settings, and turning errors into messages.

Building the parser imports nothing of the service: the config with its catalog
of plugins (faust, the Kafka and PostgreSQL clients, ...) is imported by the
command that loads it (:func:`settings_from_args`), so ``--help``, an argument
error and the commands that read the core sections only
(:func:`core_settings_from_args`) start quickly (tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from eventpipe.errors import ConfigError, EventpipeError
from eventpipe.logs import setup_logging

if TYPE_CHECKING:
    from eventpipe.service.config import ServiceConfig
    from eventpipe.settings import Settings

err_console = Console(stderr=True, highlight=False)


class CliError(Exception):
    """A message for the user that names the fix; exit status ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


REGISTRY_URL_ENV = "EVENTPIPE_SCHEMA_REGISTRY_URL"
CONFIG_HELP = "YAML config file (EVENTPIPE_* variables and flags override it)"
SHARED_HELP = {
    "--database-url": "PostgreSQL URI of eventpipe's database "
    "(wins over $EVENTPIPE_DATABASE_URL and database.url in the config)",
    "--bootstrap": "Kafka bootstrap servers, host:port[,host:port] "
    "(wins over $EVENTPIPE_KAFKA_BOOTSTRAP and kafka.bootstrap in the config)",
    "--registry": f"schema registry URL (wins over ${REGISTRY_URL_ENV}; "
    "default: the service's own, under /schema-registry)",
}


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A command listed with its one-line ``help``, whose own ``--help`` opens with
    ``description`` (default: the help as a sentence)."""
    return sub.add_parser(
        name, help=help, description=description or help[:1].upper() + help[1:] + "."
    )


def add_config_args(
    p: argparse.ArgumentParser,
    *,
    database: bool,
    kafka: bool,
    registry: bool = False,
    config_default: str | None = None,
) -> None:
    """``-c FILE`` and the flags of what the command reaches, the same everywhere:
    ``--database-url`` (eventpipe's PostgreSQL), ``--bootstrap`` (Kafka),
    ``--registry`` (a schema registry).  A flag wins over its ``EVENTPIPE_*``
    variable, which wins over the config file (:func:`cli_overrides`)."""
    p.add_argument("-c", "--config", default=config_default, help=CONFIG_HELP)
    if database:
        p.add_argument("--database-url", metavar="URL", help=SHARED_HELP["--database-url"])
    if kafka:
        p.add_argument("--bootstrap", metavar="HOST:PORT", help=SHARED_HELP["--bootstrap"])
    if registry:
        p.add_argument("--registry", metavar="URL", help=SHARED_HELP["--registry"])


def cli_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The settings the shared flags set (applied over the environment and the file)."""
    out: dict[str, dict[str, Any]] = {}
    if getattr(args, "bootstrap", None):
        out["kafka"] = {"bootstrap": args.bootstrap}
    if getattr(args, "database_url", None):
        out["database"] = {"url": args.database_url}
    return out


def _overrides(
    args: argparse.Namespace, extra: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (extra or {}).items()}
    for section, values in cli_overrides(args).items():
        overrides.setdefault(section, {}).update(values)
    return overrides


def settings_from_args(
    args: argparse.Namespace, extra: Mapping[str, Mapping[str, Any]] | None = None
) -> ServiceConfig:
    """The whole config, ``sources:`` and ``pipelines:`` checked with the catalog."""
    from eventpipe.service.config import load_config

    return load_config(getattr(args, "config", None), overrides=_overrides(args, extra))


def core_settings_from_args(
    args: argparse.Namespace, extra: Mapping[str, Mapping[str, Any]] | None = None
) -> Settings:
    """The core sections only (``sources:`` and ``pipelines:`` as written), for a
    command that talks to a running service or reads what it recorded: it imports
    no plugin."""
    from eventpipe.settings import load_settings

    return load_settings(getattr(args, "config", None), overrides=_overrides(args, extra))


def start_observability(settings: ServiceConfig, *, worker: int | None = None) -> None:
    """Logging as ``logging:`` says (its level defaults to ``service.log_level``;
    ``worker``: lines tagged with the worker's index), and tracing when an OTLP
    endpoint is configured (:mod:`eventpipe.telemetry`)."""
    from eventpipe import telemetry

    setup_logging(
        settings.logging.level or settings.service.log_level,
        settings.logging.format,
        worker=worker,
    )
    telemetry.setup(settings)


def report(exc: BaseException) -> int:
    if isinstance(exc, CliError):
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.code
    if isinstance(exc, ConfigError):
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    if isinstance(exc, EventpipeError):
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 3 if exc.retriable else 2
    raise exc


__all__ = [
    "CliError",
    "add_config_args",
    "core_settings_from_args",
    "err_console",
    "report",
    "settings_from_args",
    "setup_logging",
]
