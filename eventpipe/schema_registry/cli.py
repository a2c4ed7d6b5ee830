"""``eventpipe schemas register|list|show|check|delete`` (any Confluent-compatible
registry) and ``eventpipe schema-registry serve`` (ours, alone, at the root).

The registry URL: ``--registry``, else ``EVENTPIPE_SCHEMA_REGISTRY_URL``, else the
service's own (``http://<service.host>:<service.port>/schema-registry``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from rich.console import Console

from eventpipe.cli.common import (
    REGISTRY_URL_ENV,
    CliError,
    add_command,
    add_config_args,
    core_settings_from_args,
    err_console,
    settings_from_args,
    setup_logging,
)

from .errors import RegistryClientError, RegistryUnavailableError
from .models import AVRO, JSON, PREFIX, SCHEMA_TYPES, Schema, SchemaReference

if TYPE_CHECKING:
    from eventpipe.settings import Settings

    from .client import SchemaRegistryClient, Version

# The client (aiohttp, the schema libraries) and the server (PostgreSQL) are
# imported when a command runs, not while the parser is built.

URL_ENV = REGISTRY_URL_ENV
DEFAULT_SERVE_PORT = 8081
out_console = Console(highlight=False, soft_wrap=True)
T = TypeVar("T")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_schemas(sub)
    _register_serve(sub)


def _common(p: argparse.ArgumentParser) -> None:
    add_config_args(p, database=False, kafka=False, registry=True)


def _schema_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("subject", help="the subject, e.g. orders-value")
    p.add_argument("file", help="schema file ('-' = stdin)")
    p.add_argument(
        "--type",
        dest="schema_type",
        choices=SCHEMA_TYPES,
        type=str.upper,
        help="schema type (default: AVRO for .avsc; JSON when the file has $schema, "
        "properties or type object; else AVRO)",
    )
    p.add_argument(
        "--ref",
        action="append",
        default=[],
        metavar="NAME=SUBJECT:VERSION",
        help="a reference the schema uses (repeatable); VERSION may be 'latest'",
    )


def _register_schemas(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub, "schemas", "register, list, show, check and delete schemas in a schema registry"
    )
    ssub = p.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")

    r = add_command(ssub, "register", "register a schema file under a subject")
    _common(r)
    _schema_args(r)
    r.set_defaults(func=cmd_register)

    ls = add_command(ssub, "list", "list subjects, or the versions of one subject")
    _common(ls)
    ls.add_argument("subject", nargs="?", help="list this subject's versions")
    ls.add_argument("--deleted", action="store_true", help="include soft-deleted ones")
    ls.add_argument("--prefix", help="only subjects starting with this")
    ls.set_defaults(func=cmd_list)

    sh = add_command(ssub, "show", "print a schema (subject + version, or --id)")
    _common(sh)
    sh.add_argument("subject", nargs="?", help="the subject (or pass --id)")
    sh.add_argument("--version", default="latest", help="version number or 'latest'")
    sh.add_argument("--id", type=int, dest="schema_id", help="global schema id instead")
    sh.set_defaults(func=cmd_show)

    ck = add_command(
        ssub, "check", "would this schema file be compatible with the subject? (with reasons)"
    )
    _common(ck)
    _schema_args(ck)
    ck.add_argument(
        "--version",
        default=None,
        help="check against this version only ('latest' or a number); default: the "
        "versions the subject's compatibility level names",
    )
    ck.set_defaults(func=cmd_check)

    d = add_command(ssub, "delete", "delete a subject, or one version of it")
    _common(d)
    d.add_argument("subject", help="the subject to delete")
    d.add_argument("--version", help="delete only this version ('latest' or a number)")
    d.add_argument(
        "--permanent",
        action="store_true",
        help="hard delete (only after a soft delete); ids are never reused either way",
    )
    d.set_defaults(func=cmd_delete)


def _register_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "schema-registry", "run the schema registry on its own")
    ssub = p.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    s = add_command(ssub, "serve", "serve the registry API at the root of a port")
    add_config_args(s, database=True, kafka=False)
    s.add_argument("--host", help="bind address (default service.host)")
    s.add_argument(
        "--port",
        type=int,
        default=DEFAULT_SERVE_PORT,
        help=f"port (default {DEFAULT_SERVE_PORT}; 0 = any free port)",
    )
    s.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    s.set_defaults(func=cmd_serve)


# ---------------------------------------------------------------------- helpers


def registry_url(args: argparse.Namespace, settings: Settings | None = None) -> str:
    if getattr(args, "registry", None):
        return str(args.registry)
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV]
    settings = settings or core_settings_from_args(args)
    host = settings.service.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{settings.service.port}{PREFIX}"


def _run(args: argparse.Namespace, action: Callable[[SchemaRegistryClient], Awaitable[T]]) -> T:
    from .client import SchemaRegistryClient

    url = registry_url(args)

    async def go() -> T:
        async with SchemaRegistryClient(url) as client:
            return await action(client)

    try:
        return asyncio.run(go())
    except RegistryUnavailableError as exc:
        raise CliError(f"{exc}; is the registry running? (pass --registry URL)", 3) from exc
    except RegistryClientError as exc:
        raise CliError(f"{exc.message} (error_code {exc.error_code}, {url})") from exc


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc


def guess_type(path: str, text: str) -> str:
    if path.endswith(".avsc"):
        return AVRO
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(doc, dict) and (
        "$schema" in doc or "properties" in doc or doc.get("type") == "object"
    ):
        return JSON
    if isinstance(doc, bool):
        return JSON
    return AVRO


def _parse_ref(value: str) -> SchemaReference:
    name, sep, rest = value.partition("=")
    subject, sep2, version = rest.rpartition(":")
    if not sep or not sep2 or not name or not subject:
        raise CliError(
            f"--ref {value!r}: use NAME=SUBJECT:VERSION, e.g. com.acme.Address=address-value:1"
        )
    if version.lower() == "latest":
        return SchemaReference(name, subject, -1)
    try:
        return SchemaReference(name, subject, int(version))
    except ValueError:
        raise CliError(f"--ref {value!r}: VERSION must be a number or 'latest'") from None


def _schema_from_args(args: argparse.Namespace) -> Schema:
    text = _read(args.file)
    kind = args.schema_type or guess_type(args.file, text)
    return Schema(text, kind, tuple(_parse_ref(r) for r in args.ref))


def _version(value: str | None) -> Version | None:
    if value is None:
        return None
    if value.lower() == "latest":
        return "latest"
    try:
        return int(value)
    except ValueError:
        raise CliError(f"--version {value!r}: a number or 'latest'") from None


# --------------------------------------------------------------------- commands


def cmd_register(args: argparse.Namespace) -> int:
    schema = _schema_from_args(args)

    async def action(c: SchemaRegistryClient) -> tuple[int, int]:
        schema_id = await c.register(args.subject, schema)
        reg = await c.lookup(args.subject, schema)
        return schema_id, reg.version

    schema_id, version = _run(args, action)
    out_console.print(f"registered {args.subject} version {version} (id {schema_id})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.subject:
        versions = _run(args, lambda c: c.versions(args.subject, deleted=args.deleted))
        for v in versions:
            out_console.print(str(v))
        return 0
    subjects = _run(args, lambda c: c.subjects(deleted=args.deleted, prefix=args.prefix))
    for s in subjects:
        out_console.print(s)
    if not subjects:
        err_console.print("no subjects", soft_wrap=True)
    return 0


def _pretty(text: str) -> str:
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text


def cmd_show(args: argparse.Namespace) -> int:
    if args.schema_id is not None:
        schema = _run(args, lambda c: c.get_by_id(args.schema_id))
        err_console.print(f"id {args.schema_id}, type {schema.schema_type}", soft_wrap=True)
    elif args.subject:
        version = _version(args.version)
        assert version is not None
        reg = _run(args, lambda c: c.get_version(args.subject, version))
        schema = reg.schema
        err_console.print(
            f"{reg.subject} version {reg.version}, id {reg.id}, type {schema.schema_type}",
            soft_wrap=True,
        )
    else:
        raise CliError("name a SUBJECT (with --version) or pass --id N")
    for ref in schema.references:
        err_console.print(
            f"reference {ref.name} = {ref.subject} version {ref.version}", soft_wrap=True
        )
    print(_pretty(schema.schema))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    schema = _schema_from_args(args)
    version = _version(args.version)

    async def action(c: SchemaRegistryClient) -> tuple[Any, str]:
        result = await c.check_compatibility(
            args.subject,
            schema,
            version=version,
        )
        return result, await c.get_compatibility(args.subject)

    result, level = _run(args, action)
    against = f"version {version}" if version else "the versions its level names"
    if result.is_compatible:
        out_console.print(f"compatible with {args.subject} ({against}, level {level})")
        return 0
    out_console.print(f"[bold red]incompatible[/] with {args.subject} ({against}, level {level}):")
    for message in result.messages:
        out_console.print(f"  {message}", markup=False)
    return 1


def cmd_delete(args: argparse.Namespace) -> int:
    if args.version is not None:
        version = _version(args.version)
        assert version is not None
        deleted = _run(
            args,
            lambda c: c.delete_version(
                args.subject,
                version,
                permanent=args.permanent,
            ),
        )
        kind = "permanently deleted" if args.permanent else "soft-deleted"
        out_console.print(f"{kind} {args.subject} version {deleted}")
        return 0
    versions = _run(args, lambda c: c.delete_subject(args.subject, permanent=args.permanent))
    kind = "permanently deleted" if args.permanent else "soft-deleted"
    out_console.print(f"{kind} {args.subject} versions {', '.join(map(str, versions))}")
    return 0


# ------------------------------------------------------------------------ serve


async def serve_registry(
    settings: Settings,
    host: str,
    port: int,
    *,
    migrate: bool = True,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the registry alone until ``stop`` is set (or SIGINT / SIGTERM)."""
    from aiohttp import web

    from eventpipe.db.migrations import apply_migrations
    from eventpipe.db.pool import open_pool

    from .server import build_registry_app

    if migrate:
        await apply_migrations(settings.database.url.get_secret_value())
    pool = await open_pool(settings.database, name="schema-registry")
    runner = web.AppRunner(build_registry_app(pool), handle_signals=False, access_log=None)
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    handled: list[signal.Signals] = []
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(f"port {port} is in use; pass --port N") from exc
            raise
        bound = port
        for addr in runner.addresses:
            bound = addr[1]
            break
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
        if on_ready is not None:
            on_ready(f"http://{shown}:{bound}")
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        await pool.close()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging(settings.logging.level or settings.service.log_level, settings.logging.format)
    host = args.host or settings.service.host

    def ready(url: str) -> None:
        err_console.print(f"schema registry serving on {url}", soft_wrap=True)

    asyncio.run(
        serve_registry(settings, host, args.port, migrate=not args.no_migrate, on_ready=ready)
    )
    return 0
