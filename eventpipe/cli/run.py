"""``eventpipe run`` (the service) and ``eventpipe migrate``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import TYPE_CHECKING

from eventpipe import loop
from eventpipe.cli.common import (
    add_command,
    add_config_args,
    err_console,
    settings_from_args,
    start_observability,
)
from eventpipe.roles import ROLES

if TYPE_CHECKING:
    from eventpipe.service.config import ServiceConfig
    from eventpipe.service.runner import Service
    from eventpipe.service.workers.supervisor import Supervisor

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "run", "run the service (HTTP API, pipelines, CDC) from a config")
    add_config_args(p, database=True, kafka=True)
    p.add_argument("--role", choices=ROLES, default="all", help="which parts this process runs")
    p.add_argument("--port", type=int, help="HTTP port (default service.port)")
    p.add_argument("--host", help="HTTP bind address (default service.host)")
    p.add_argument(
        "--workers",
        type=_workers,
        metavar="N|auto",
        help="run N processes under one supervisor, sharing the HTTP port; auto: one per "
        "core (default service.workers: 1, this process alone)",
    )
    p.add_argument(
        "--ops-port",
        type=int,
        metavar="N",
        help="with --workers > 1: the supervisor's port for /healthz, /readyz, /metrics and "
        "/v1/status of all workers (default service.ops_port, else the HTTP port + 1)",
    )
    p.set_defaults(func=cmd_run)


def _workers(text: str) -> int | str:
    from eventpipe.settings import WORKERS_HELP, parse_workers

    try:
        return parse_workers(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give {WORKERS_HELP}, e.g. --workers 4 or --workers auto"
        ) from None


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
    if getattr(args, "workers", None) is not None:
        svc["workers"] = args.workers
    if getattr(args, "ops_port", None) is not None:
        svc["ops_port"] = args.ops_port
    return {"service": svc} if svc else {}


def cmd_run(args: argparse.Namespace) -> int:
    from eventpipe import telemetry
    from eventpipe.service.runner import Service, serve_until_signalled
    from eventpipe.service.workers.slot import WorkerSlot, serve_as_worker
    from eventpipe.settings import worker_count

    settings = settings_from_args(args, service_overrides(args))
    slot = WorkerSlot.from_env()
    count = worker_count(settings.service.workers)
    if slot is None and count > 1:
        return _supervise(args, settings, count)
    start_observability(settings, worker=None if slot is None else slot.index)

    def ready(service: Service) -> None:
        who = "eventpipe" if slot is None else f"eventpipe worker {slot.index}"
        _say(settings, f"{who} serving on {service.url} (role {args.role})")

    try:
        if slot is None:
            loop.run(serve_until_signalled(Service(settings, args.role), ready))
        else:
            service = Service(settings, args.role, ops_listener=slot.ops_socket(), reuse_port=True)
            loop.run(serve_as_worker(service, slot, ready))
    finally:
        telemetry.shutdown()  # export the spans still buffered
    return 0


def _say(settings: ServiceConfig, message: str) -> None:
    if settings.logging.format == "json":
        log.info("%s", message)  # stderr holds JSON lines only
    else:
        err_console.print(message, soft_wrap=True)


def _supervise(args: argparse.Namespace, settings: ServiceConfig, count: int) -> int:
    """``--workers N``: this process supervises N workers running the same command."""
    from eventpipe.service.workers.serve import supervise

    start_observability(settings)
    argv = ["run", "--role", args.role]
    for flag, value in (
        ("-c", args.config),
        ("--host", args.host),
        ("--bootstrap", args.bootstrap),
        ("--database-url", args.database_url),
    ):
        if value:
            argv += [flag, value]

    def ready(sup: Supervisor, ops_url: str) -> None:
        host = settings.service.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        _say(
            settings,
            f"eventpipe serving on http://{host}:{sup.port} (role {args.role}, {count} "
            f"workers); all workers' /metrics and /v1/status on {ops_url}",
        )

    return loop.run(supervise(settings, argv, count, ready))


def cmd_migrate(args: argparse.Namespace) -> int:
    from eventpipe.db.migrations import apply_migrations

    settings = settings_from_args(args)
    applied = asyncio.run(apply_migrations(settings.database.url.get_secret_value()))
    err_console.print(
        f"applied {len(applied)} migration(s): {applied}" if applied else "up to date"
    )
    return 0
