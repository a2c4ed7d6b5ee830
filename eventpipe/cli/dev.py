"""``eventpipe dev``: the embedded stack (PostgreSQL + Tansu) and the service, in one
command; Ctrl-C or SIGTERM stops everything and leaves no process behind."""

from __future__ import annotations

import argparse
import os
import shlex
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from eventpipe import loop
from eventpipe.cli.common import (
    CliError,
    add_command,
    add_config_args,
    err_console,
    settings_from_args,
    start_observability,
)
from eventpipe.embedded.process import PortInUseError

if TYPE_CHECKING:
    from eventpipe.embedded.stack import EmbeddedStack
    from eventpipe.service.runner import Service
    from eventpipe.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "dev",
        "run the service on an embedded PostgreSQL and Kafka broker (what `make dev` runs)",
        description="Run the service on an embedded PostgreSQL and Kafka broker (what "
        "`make dev` runs). --database-url and --bootstrap (or EVENTPIPE_DATABASE_URL and "
        "EVENTPIPE_KAFKA_BOOTSTRAP) name external ones to use instead; database.url and "
        "kafka.bootstrap in the config are not used. -c defaults to examples/eventpipe.yaml.",
    )
    add_config_args(p, database=True, kafka=True, config_default="examples/eventpipe.yaml")
    p.add_argument("--port", type=int, help="HTTP port (default service.port, 8080)")
    p.add_argument("--postgres-port", type=int, help="embedded PostgreSQL port (default 5432)")
    p.add_argument("--kafka-port", type=int, help="embedded broker port (default 9092)")
    p.add_argument("--data-dir", help="where embedded data lives (default .eventpipe/)")
    p.set_defaults(func=cmd_dev)


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    if args.port is not None:
        out.setdefault("service", {})["port"] = args.port
    emb: dict[str, object] = {}
    if args.postgres_port is not None:
        emb["postgres_port"] = args.postgres_port
    if args.kafka_port is not None:
        emb["kafka_port"] = args.kafka_port
    if args.data_dir:
        emb["data_dir"] = args.data_dir
    if emb:
        out["embedded"] = emb
    return out


def stack_environ(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the embedded stack reads: the flags name external services
    as their variables do, and win over them."""
    from eventpipe.embedded.stack import DATABASE_ENV, KAFKA_ENV

    out = dict(environ)
    if args.database_url:
        out[DATABASE_ENV] = args.database_url
    if args.bootstrap:
        out[KAFKA_ENV] = args.bootstrap
    return out


def banner(settings: Settings, service: Service, stack: EmbeddedStack) -> str:
    topic = settings.topics[0].name if settings.topics else "demo.events"
    cfg = ""
    pg = "external" if stack.postgres is None else stack.database_url
    kafka = "external" if stack.broker is None else "embedded Tansu"
    curl = (
        f"curl -i -X POST {service.url}/v1/topics/{topic}/events "
        "-H 'content-type: application/cloudevents+json' "
        '-d \'{"specversion":"1.0","id":"evt-1","source":"/demo",'
        '"type":"demo.greeting","data":{"hello":"world"}}\''
    )
    bs = shlex.quote(stack.bootstrap)
    return "\n".join(
        [
            "",
            "[bold green]eventpipe dev is running[/]" + cfg,
            f"  HTTP API      {service.url}   (/healthz /readyz /metrics)",
            *_console_line(settings, service),
            f"  Kafka         {stack.bootstrap}   ({kafka})",
            f"  PostgreSQL    {pg}",
            "",
            "Publish an event (in another terminal):",
            f"  .venv/bin/eventpipe publish --bootstrap {bs} --topic {topic} "
            '--type demo.greeting --source /demo --data \'{"hello": "world"}\'',
            "or over HTTP:",
            f"  {curl}",
            "See it:",
            f"  .venv/bin/eventpipe tail --bootstrap {bs} --topic {topic} --from-beginning",
            "",
            *_webhook_lines(settings, service),
            "Ctrl-C stops everything.",
        ]
    )


def _console_line(settings: Settings, service: Service) -> list[str]:
    if not settings.service.console.enabled:
        return []
    login = "log in with service.admin_token" if settings.service.admin_token else "read-only"
    return [f"  Console       {service.url}/console/   ({login})"]


def _webhook_lines(settings: Settings, service: Service) -> list[str]:
    from eventpipe.connectors.webhook.config import WebhookEntry

    hooks = [s for s in settings.sources if isinstance(s, WebhookEntry)]
    if not hooks:
        return []
    lines = ["Webhook endpoints (signed requests; see README for a signed curl example):"]
    for h in hooks:
        lines.append(f"  POST {service.url}/webhooks/{h.name}  -> topic {h.topic}")
    if settings.pipelines:
        names = ", ".join(str(p.get("name")) for p in settings.pipelines)
        lines.append(f"Pipelines running: {names}")
    lines.append("")
    return lines


async def _run_init_sql(url: str, files: list[Path]) -> None:
    """The demo's own tables, created before the service starts (idempotent SQL)."""
    import psycopg

    from eventpipe.db.migrations import apply_migrations

    await apply_migrations(url)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for f in files:
            try:
                sql = f.read_text()
            except OSError as exc:
                raise CliError(f"embedded.init_sql: cannot read {f}: {exc.strerror}") from exc
            await conn.execute(sql.encode())
        await conn.commit()


def cmd_dev(args: argparse.Namespace) -> int:
    from eventpipe import telemetry
    from eventpipe.embedded.stack import DATABASE_ENV, KAFKA_ENV, EmbeddedStack
    from eventpipe.service.runner import Service, serve_until_signalled

    if not Path(args.config).exists():
        err_console.print(
            f"[bold red]error:[/] config {args.config} not found; pass -c PATH "
            "(examples/eventpipe.yaml is the demo)"
        )
        return 2
    settings = settings_from_args(args, _overrides(args))
    start_observability(settings)
    emb = settings.embedded
    # Started from the main thread, before the event loop: the children are tied to
    # this process (they die with it, even on kill -9).
    stack = EmbeddedStack(
        emb.data_dir, emb.postgres_port, emb.kafka_port, environ=stack_environ(args, os.environ)
    )
    if stack.environ.get(KAFKA_ENV) or stack.environ.get(DATABASE_ENV):
        err_console.print(
            "using the external services named by --database-url / --bootstrap "
            "(or EVENTPIPE_DATABASE_URL / EVENTPIPE_KAFKA_BOOTSTRAP) where set"
        )
    listener = _claim(stack, settings)
    try:
        stack.start()
        kafka: dict[str, object] = {"bootstrap": stack.bootstrap}
        if stack.broker is not None:
            # The embedded broker starts empty while .eventpipe/pg keeps the sinks'
            # marks: every start re-creates the topics, and the marks of the last run
            # are dropped (with a warning) instead of stopping the pipelines.
            kafka["on_topic_reset"] = "reset"
        settings = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(update=kafka),
                "database": settings.database.model_copy(
                    update={"url": type(settings.database.url)(stack.database_url)}
                ),
            }
        )

        if emb.init_sql:
            loop.run(_run_init_sql(stack.database_url, emb.init_sql))

        def ready(service: Service) -> None:
            err_console.print(banner(settings, service, stack), soft_wrap=True)

        service = Service(settings, "all", listener=listener)
        loop.run(serve_until_signalled(service, ready))
    finally:
        listener.close()  # a no-op once the service took it
        telemetry.shutdown()  # export the spans still buffered
        stack.stop()
        err_console.print("stopped")
    return 0


def _claim(stack: EmbeddedStack, settings: Settings) -> socket.socket:
    """Before anything starts: the data directory is ours (a second `eventpipe dev`
    on it stops here, naming the first), and every port is free -- all of them are
    checked and reported at once.  The HTTP port is taken now, so no connection
    made while the stack starts can get it as its ephemeral port."""
    from eventpipe.service.runner import http_listener

    taken = stack.claim()
    try:
        listener = http_listener(settings)
    except PortInUseError as exc:
        taken.insert(0, exc)
    if taken:
        stack.stop()
        raise CliError("\n".join(str(exc) for exc in taken))
    return listener
