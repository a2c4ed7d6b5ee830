"""``eventpipe run`` (the service) and ``eventpipe migrate``."""

from __future__ import annotations

import argparse
import asyncio
import logging

from eventpipe import loop, telemetry
from eventpipe.cli.common import (
    add_command,
    add_config_args,
    err_console,
    settings_from_args,
    start_observability,
)
from eventpipe.db.migrations import apply_migrations
from eventpipe.service.runner import ROLES, Service, serve_until_signalled

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "run", "run the service (HTTP API, pipelines, CDC) from a config")
    add_config_args(p, database=True, kafka=True)
    p.add_argument("--role", choices=ROLES, default="all", help="which parts this process runs")
    p.add_argument("--port", type=int, help="HTTP port (default service.port)")
    p.add_argument("--host", help="HTTP bind address (default service.host)")
    p.set_defaults(func=cmd_run)


def register_migrate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "migrate", "apply eventpipe's database migrations and exit")
    add_config_args(p, database=True, kafka=False)
    p.set_defaults(func=cmd_migrate)


def service_overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    svc: dict[str, object] = {}
    if getattr(args, "port", None) is not None:
        svc["port"] = args.port
    if getattr(args, "host", None):
        svc["host"] = args.host
    return {"service": svc} if svc else {}


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, service_overrides(args))
    start_observability(settings)

    def ready(service: Service) -> None:
        message = f"eventpipe serving on {service.url} (role {args.role})"
        if settings.logging.format == "json":
            log.info("%s", message)  # stderr holds JSON lines only
        else:
            err_console.print(message)

    try:
        loop.run(serve_until_signalled(Service(settings, args.role), ready))
    finally:
        telemetry.shutdown()  # export the spans still buffered
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    applied = asyncio.run(apply_migrations(settings.database.url.get_secret_value()))
    err_console.print(
        f"applied {len(applied)} migration(s): {applied}" if applied else "up to date"
    )
    return 0
