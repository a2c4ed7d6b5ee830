"""``eventpipe status``: what a running service's components are doing, as a table.

eventpipe status [-c FILE | --url URL] [--component NAME ...] [--watch] [--json]

It asks the service (``GET /v1/status``): ``--url``, else the ``service.host`` and
``service.port`` of the config (``-c FILE``, the ``EVENTPIPE_SERVICE_*``
variables, the defaults: ``http://127.0.0.1:8080``).  The bearer token is the
config's ``service.admin_token`` (or ``EVENTPIPE_SERVICE_ADMIN_TOKEN``); a service
with ``service.console.public_read`` needs none.  Exit 0 when every component
works, 1 when one needs attention (failed, stalled, paused by an open circuit, or
not healthy: a pipeline waiting for its schema subject), 2 when the service cannot
be asked.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from eventpipe import loop
from eventpipe.cli.common import CliError, add_command, add_config_args, core_settings_from_args

WATCH_S = 2.0
TIMEOUT_S = 5.0
LAG_LINES = 6  # partitions listed in the lag column; the rest are summed up
STATE_STYLE = {
    "running": "green",
    "starting": "yellow",
    "waiting": "yellow",
    "paused": "yellow",
    "stalled": "bold red",
    "failed": "bold red",
    "stopped": "dim",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "status",
        "the state, rates, lag, dead letters and last error of a running service's "
        "components (exit 0 all working, 1 attention, 2 unreachable)",
    )
    add_config_args(p, database=False, kafka=False)
    p.add_argument(
        "--url",
        metavar="URL",
        help="the service, e.g. http://10.0.0.5:8080 (default: service.host and "
        "service.port of the config)",
    )
    p.add_argument(
        "--component",
        action="append",
        metavar="NAME",
        help="only this check name, e.g. pipeline:orders (repeat for more)",
    )
    p.add_argument("--watch", action="store_true", help=f"refresh every {WATCH_S:g} s (Ctrl-C)")
    p.add_argument("--json", action="store_true", help="the /v1/status answer, as JSON")
    p.set_defaults(func=cmd_status)


class Unreachable(CliError):
    """The service could not be asked (exit 2)."""


def target(args: argparse.Namespace) -> tuple[str, str | None]:
    """(the service's base URL, the bearer token or None): the config's core
    sections are read (``sources:`` and ``pipelines:`` are the service's business)."""
    settings = core_settings_from_args(args)
    token = settings.service.admin_token
    secret = token.get_secret_value() if token is not None else None
    if args.url:
        url = args.url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise CliError(f"--url {args.url!r}: give it with its scheme, e.g. http://{url}")
        return url, secret
    from eventpipe.settings import worker_count

    svc = settings.service
    port = svc.port
    if worker_count(svc.workers) > 1:  # the supervisor has every worker's status
        port = svc.ops_port if svc.ops_port is not None else svc.port + 1
    if port == 0:
        raise CliError(
            "the config's service.port is 0 (a free port is picked when the service "
            "starts): pass --url with the port it printed"
        )
    host = "127.0.0.1" if svc.host in ("0.0.0.0", "::", "") else svc.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}", secret


async def fetch(url: str, token: str | None, components: list[str] | None) -> dict[str, Any]:
    """``GET /v1/status``; :class:`Unreachable` with the fix when it cannot be had."""
    import aiohttp

    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    params = [("component", c) for c in components or []]
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http,
            http.get(f"{url}/v1/status", headers=headers, params=params) as r,
        ):
            raw = await r.read()
            status = r.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        why = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
        raise Unreachable(
            f"cannot reach eventpipe at {url} ({why}); is it running (`eventpipe run -c "
            "FILE`, `make dev`)? Pass --url URL, or -c FILE whose service.host and "
            "service.port it listens on"
        ) from exc
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if status in (401, 403):
        raise Unreachable(
            f"{url} refused the status ({status}: {detail}); pass -c FILE with the "
            "service's admin_token, or set EVENTPIPE_SERVICE_ADMIN_TOKEN"
        )
    fields = [e.get("field") for e in body.get("errors", [])] if isinstance(body, dict) else []
    if status == 404 and "component" in fields:
        raise CliError(f"--component: {detail}")
    if status != 200 or not isinstance(body, dict) or "components" not in body:
        raise Unreachable(
            f"{url}/v1/status answered {status}{f' ({detail})' if detail else ''}; is "
            "this an eventpipe service? (--url)"
        )
    return body


def exit_code(snap: dict[str, Any]) -> int:
    return 0 if snap.get("ok") else 1


# ------------------------------------------------------------------- rendering
def _rate(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _age(iso: str, now: datetime) -> str:
    s = max(0, int((now - datetime.fromisoformat(iso)).total_seconds()))
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    return f"{s // 3600}h ago" if s < 172800 else f"{s // 86400}d ago"


def _lag(c: dict[str, Any]) -> Text:
    lag: dict[str, int] = c.get("lag") or {}
    if not lag:
        return Text("")
    out = Text(str(sum(lag.values())), style="bold")
    items = sorted(lag.items())
    for tp, n in items[:LAG_LINES]:
        out.append(f"\n{tp} {n}", style="dim")
    if len(items) > LAG_LINES:
        out.append(f"\n+{len(items) - LAG_LINES} more", style="dim")
    return out


def _dead(c: dict[str, Any]) -> str:
    dead: dict[str, int] = c.get("dead_letters") or {}
    return ", ".join(f"{stage} {n}" for stage, n in sorted(dead.items()))


def _error(c: dict[str, Any], now: datetime) -> Text:
    e = c.get("last_error")
    if not e:
        return Text("")
    message = e["message"] if len(e["message"]) <= 80 else e["message"][:79] + "…"
    return Text(message, style="red").append(f"\n{_age(e['at'], now)}", style="dim")


def render(snap: dict[str, Any], url: str, now: datetime | None = None) -> Group:
    from eventpipe.status_board import facts

    now = now or datetime.now(UTC)
    table = Table(title=f"eventpipe at {url}", title_justify="left", expand=False)
    workers = "workers" in snap  # the supervisor of `eventpipe run --workers N`
    if workers:
        table.add_column("worker", justify="right")
    for name, justify in (
        ("component", "left"),
        ("state", "left"),
        ("in/s", "right"),
        ("out/s", "right"),
        ("lag", "right"),
        ("dead letters", "left"),
        ("last error", "left"),
        ("details", "left"),
    ):
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            overflow="fold",
            no_wrap=name == "component",
        )
    for c in snap["components"]:
        state = Text(c["state"], style=STATE_STYLE.get(c["state"], ""))
        if c.get("health", "ok") != "ok":
            state.append(f"\n{c['health']}", style="yellow")
        table.add_row(
            *([str(c.get("worker", ""))] if workers else []),
            Text(c["check"], style="bold"),
            state,
            _rate(c["rate_in"]),
            _rate(c["rate_out"]),
            _lag(c),
            _dead(c),
            _error(c, now),
            "\n".join(facts(c)),
        )
        for s in c.get("children") or []:
            table.add_row(
                *([""] if workers else []),
                Text(f"  └ {s['name']} ({s['type']})"),
                Text(s["state"], style=STATE_STYLE.get(s["state"], "")),
                "",
                _rate(s["rate_out"]),
                "",
                _dead(s),
                _error(s, now),
                "\n".join(facts(s)),
            )
    if not snap["components"]:
        table.add_row(Text("no sources or pipelines run in this process", style="dim"))
    if snap.get("ok"):
        foot = Text(f"all {len(snap['components'])} components work", style="green")
    else:
        foot = Text("needs attention: " + ", ".join(snap.get("attention", [])), style="bold red")
    if not workers:
        return Group(table, foot)
    return Group(table, foot, _workers_line(snap["workers"]))


def _workers_line(workers: list[dict[str, Any]]) -> Text:
    out = Text("workers: ")
    for i, w in enumerate(workers):
        if i:
            out.append("; ")
        state = w["state"]
        out.append(f"{w['worker']} {state}", style=STATE_STYLE.get(state, "yellow"))
        pid = f"pid {w['pid']}, " if w.get("pid") else ""
        out.append(f" ({pid}{w['restarts']} restarts)", style="dim")
    return out


# ---------------------------------------------------------------------- command
def cmd_status(args: argparse.Namespace) -> int:
    url, token = target(args)
    if args.watch:
        return loop.run(_watch(url, token, args))
    snap = loop.run(fetch(url, token, args.component))
    if args.json:
        sys.stdout.write(orjson.dumps(snap, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        # piped: wide enough that a row stays a row (a terminal wraps at its width)
        Console(width=None if sys.stdout.isatty() else 200).print(render(snap, url))
    return exit_code(snap)


async def _watch(url: str, token: str | None, args: argparse.Namespace) -> int:
    """Refresh every WATCH_S until Ctrl-C (exit 130); a service that stops answering
    is retried, and says so."""
    with Live(Text(f"asking {url} ..."), console=Console(), auto_refresh=False) as live:
        while True:
            try:
                snap = await fetch(url, token, args.component)
            except Unreachable as exc:
                live.update(Text(f"{exc} (retrying every {WATCH_S:g} s)", style="red"))
            else:
                if args.json:
                    live.update(Text(orjson.dumps(snap, option=orjson.OPT_INDENT_2).decode()))
                else:
                    live.update(render(snap, url))
            live.refresh()
            await asyncio.sleep(WATCH_S)
