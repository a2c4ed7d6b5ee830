"""``eventpipe cdc``: status of replication slots, ad-hoc snapshots, dropping a slot.

eventpipe cdc status [-c cfg] [--database-url URL] [--json]
eventpipe cdc snapshot --table public.orders [--where "region = 'eu'"] [--source NAME | --slot SLOT]
    [--database-url URL] [--wait]
eventpipe cdc drop-slot NAME [--database-url URL] [--yes]

``--database-url`` is eventpipe's database, as for every command.  The captured
database of a slot is its configured source's ``database_url``, else that one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.table import Table

from eventpipe.cli.common import (
    CliError,
    add_command,
    add_config_args,
    err_console,
    settings_from_args,
)

if TYPE_CHECKING:
    import psycopg

    from eventpipe.connectors.postgres_cdc.config import PostgresCdcConfig
    from eventpipe.settings import Settings

# The CDC connector (and psycopg) is imported by the command that runs, so that
# building the parser imports none of it (tests/unit/test_cli_imports.py).


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "cdc", "Postgres CDC: slot status, snapshots, dropping a slot")
    cmds = p.add_subparsers(dest="cdc_command", required=True, metavar="SUBCOMMAND")

    st = add_command(cmds, "status", "replication slots, their lag and last event")
    add_config_args(st, database=True, kafka=False)
    st.add_argument("--json", action="store_true", help="one JSON object per slot")
    st.set_defaults(func=cmd_status)

    sn = add_command(
        cmds,
        "snapshot",
        "re-read a table (in key chunks, while the stream keeps flowing)",
        description=(
            "Queue an incremental snapshot: the running CDC source reads the table in "
            "primary-key chunks between watermarks and emits the rows as op 'r' events."
        ),
    )
    add_config_args(sn, database=True, kafka=False)
    sn.add_argument("--table", "-t", action="append", required=True, help="schema.table (repeat)")
    sn.add_argument(
        "--where",
        help="one boolean SQL expression over the table's columns, e.g. \"region = 'eu'\" "
        "(checked by PostgreSQL before it is queued; runs read-only)",
    )
    sn.add_argument("--source", help="the postgres_cdc source (default: the only one configured)")
    sn.add_argument(
        "--slot",
        help="the slot, instead of --source (it must exist in the captured database: "
        "its source's database_url, else eventpipe's)",
    )
    sn.add_argument("--wait", action="store_true", help="wait until the snapshot is done")
    sn.add_argument(
        "--wait-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="with --wait: give up after S seconds (default 600)",
    )
    sn.set_defaults(func=cmd_snapshot)

    dr = add_command(cmds, "drop-slot", "drop a replication slot (asks first)")
    add_config_args(dr, database=True, kafka=False)
    dr.add_argument(
        "slot", help="in its source's database_url if the config has one, else eventpipe's"
    )
    dr.add_argument("--yes", "-y", action="store_true", help="do not ask")
    dr.set_defaults(func=cmd_drop_slot)


# ------------------------------------------------------------------- helpers
def _cdc_sources(settings: Settings) -> dict[str, tuple[str, PostgresCdcConfig]]:
    """slot -> (source name, config) for the postgres_cdc sources in the config."""
    from eventpipe.connectors.postgres_cdc.config import PostgresCdcEntry

    out: dict[str, tuple[str, PostgresCdcConfig]] = {}
    for entry in settings.sources:
        if isinstance(entry, PostgresCdcEntry):
            out[entry.slot_name(entry.name)] = (entry.name, entry)
    return out


def _captured_url(settings: Settings, cfg: PostgresCdcConfig | None) -> str:
    """The database a slot lives in: its source's ``database_url``, else eventpipe's."""
    url = cfg.database_url if cfg is not None and cfg.database_url else settings.database.url
    return url.get_secret_value()


async def _connect(url: str) -> psycopg.AsyncConnection[Any]:
    import psycopg

    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise CliError(
            f"cannot connect to PostgreSQL: {str(exc).strip()}; check database.url, "
            "EVENTPIPE_DATABASE_URL or --database-url",
            3,
        ) from exc


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _ago(t: datetime | None) -> str:
    if t is None:
        return "-"
    secs = (datetime.now(UTC) - t).total_seconds()
    return f"{secs:.1f}s ago" if secs < 120 else f"{secs / 60:.0f}m ago"


# -------------------------------------------------------------------- status
async def _status(args: argparse.Namespace, settings: Settings) -> list[dict[str, Any]]:
    import psycopg

    from eventpipe.connectors.postgres_cdc import slot as slots
    from eventpipe.connectors.postgres_cdc.lock import holder_pid
    from eventpipe.connectors.postgres_cdc.lsn import format_lsn

    eventpipe_url = settings.database.url.get_secret_value()
    configured = _cdc_sources(settings)
    # The slots of every captured database: eventpipe's, and each source's own.
    captured = dict.fromkeys(
        [eventpipe_url, *(_captured_url(settings, cfg) for _name, cfg in configured.values())]
    )
    found: list[slots.SlotInfo] = []
    holders: dict[str, int | None] = {}
    for url in captured:
        conn = await _connect(url)
        try:
            here = await slots.list_slots(conn)
            holders.update({s.name: await holder_pid(conn, f"slot:{s.name}") for s in here})
            found.extend(here)
        finally:
            await conn.close()
    conn = await _connect(eventpipe_url)
    try:
        try:
            cur = await conn.execute(
                "select slot, source, position, last_event_id, last_commit_at, events_total,"
                " reader, updated_at from eventpipe.cdc_status"
            )
            status = {r[0]: r for r in await cur.fetchall()}
            cur = await conn.execute(
                "select slot, count(*) filter (where status in ('pending', 'running')),"
                " sum(rows_read) from eventpipe.cdc_snapshots group by slot"
            )
            snaps = {r[0]: (int(r[1]), int(r[2] or 0)) for r in await cur.fetchall()}
        except psycopg.errors.UndefinedTable:
            status, snaps = {}, {}
    finally:
        await conn.close()
    out = []
    for s in found:
        st = status.get(s.name)
        out.append(
            {
                "slot": s.name,
                "source": st[1] if st else configured.get(s.name, ("",))[0] or None,
                "plugin": s.plugin,
                "database": s.database,
                "active": s.active,
                "reader_pid": holders.get(s.name),
                "confirmed_flush_lsn": format_lsn(s.confirmed_flush_lsn)
                if s.confirmed_flush_lsn is not None
                else None,
                "lag_bytes": s.lag_bytes,
                "wal_status": s.wal_status,
                "last_event_id": st[3] if st else None,
                "last_commit_at": st[4].isoformat() if st and st[4] else None,
                "events_total": st[5] if st else 0,
                "reader": st[6] if st else None,
                "status_updated_at": st[7].isoformat() if st and st[7] else None,
                "snapshots_open": snaps.get(s.name, (0, 0))[0],
                "snapshot_rows": snaps.get(s.name, (0, 0))[1],
                "_commit": st[4] if st else None,
                "_updated": st[7] if st else None,
            }
        )
    for slot_name, (source, _cfg) in configured.items():
        if not any(s.name == slot_name for s in found):
            out.append({"slot": slot_name, "source": source, "missing": True})
    return out


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    rows = asyncio.run(_status(args, settings))
    if args.json:
        for r in rows:
            print(orjson.dumps({k: v for k, v in r.items() if not k.startswith("_")}).decode())
        return 0
    if not rows:
        err_console.print("no logical replication slots")
        return 0
    t = Table(title="replication slots", title_justify="left")
    for col in ("slot", "source", "reader", "confirmed", "lag", "wal", "last event", "snapshots"):
        t.add_column(col)
    for r in rows:
        if r.get("missing"):
            t.add_row(r["slot"], r["source"], "-", "(slot missing)", "-", "-", "-", "-")
            continue
        reader = (
            f"{r['reader'] or 'eventpipe'} (backend pid {r['reader_pid']})"
            if r["reader_pid"] is not None
            else "none (not read)"
        )
        last = f"{r['last_event_id']} (commit {_ago(r['_commit'])})" if r["last_event_id"] else "-"
        snaps = f"{r['snapshots_open']} open" if r["snapshots_open"] else "-"
        t.add_row(
            r["slot"],
            r["source"] or "-",
            reader,
            r["confirmed_flush_lsn"] or "-",
            _bytes(r["lag_bytes"]),
            r["wal_status"] or "-",
            last,
            snaps,
        )
    Console(highlight=False, width=200).print(t)
    return 0


# ------------------------------------------------------------------ snapshot
@dataclass(slots=True)
class _Target:
    slot: str
    tables: list[str] | None  # what the source captures (None: not in the config)
    database_url: str  # the captured database


def _resolve_slot(args: argparse.Namespace, settings: Settings) -> _Target:
    configured = _cdc_sources(settings)

    def target(slot_name: str, cfg: PostgresCdcConfig) -> _Target:
        return _Target(slot_name, cfg.tables, _captured_url(settings, cfg))

    if args.slot:
        if args.slot in configured:
            return target(args.slot, configured[args.slot][1])
        return _Target(args.slot, None, _captured_url(settings, None))
    if args.source:
        for slot_name, (name, cfg) in configured.items():
            if name == args.source:
                return target(slot_name, cfg)
        raise CliError(f"no postgres_cdc source named {args.source!r} in the config")
    if len(configured) == 1:
        slot_name, (_name, cfg) = next(iter(configured.items()))
        return target(slot_name, cfg)
    if not configured:
        raise CliError("no postgres_cdc source in the config: pass -c CONFIG, or --slot SLOT")
    names = ", ".join(n for n, _ in configured.values())
    raise CliError(f"several postgres_cdc sources ({names}): pass --source NAME")


async def _check_request(args: argparse.Namespace, to: _Target, tables: list[str]) -> None:
    """Before anything is queued: the slot exists (for --slot) and the filter is one
    boolean expression over each table's columns (PostgreSQL decides)."""
    from eventpipe.connectors.postgres_cdc import slot as slots
    from eventpipe.connectors.postgres_cdc.snapshot import SnapshotFilterError, check_filter

    if not args.slot and not args.where:
        return
    conn = await _connect(to.database_url)
    try:
        if args.slot and await slots.slot_info(conn, to.slot) is None:
            raise CliError(
                f"--slot: no replication slot named {to.slot!r} in the captured database "
                "(`eventpipe cdc status` lists them; --database-url names another database)"
            )
        if args.where:
            for t in tables:
                try:
                    await check_filter(conn, t, args.where)
                except SnapshotFilterError as exc:
                    raise CliError(f"--where: {exc}") from exc
    finally:
        await conn.close()


async def _snapshot(args: argparse.Namespace, settings: Settings) -> int:
    from eventpipe.connectors.postgres_cdc import state
    from eventpipe.connectors.postgres_cdc.config import parse_table, qualified

    to = _resolve_slot(args, settings)
    slot_name = to.slot
    try:
        tables = [qualified(*parse_table(t)) for t in args.table]
    except ValueError as exc:
        raise CliError(f"--table: {exc}") from exc
    if to.tables is not None:
        unknown = [t for t in tables if t not in to.tables]
        if unknown:
            raise CliError(
                f"{', '.join(unknown)} not captured by this source (its tables: "
                f"{', '.join(to.tables)}); add it to `tables` first"
            )
    await _check_request(args, to, tables)
    conn = await _connect(settings.database.url.get_secret_value())
    try:
        sig = await state.request_snapshot(conn, slot_name, tables, args.where)
        err_console.print(
            f"snapshot of {', '.join(tables)} requested (signal {sig}, slot {slot_name}); the "
            "running CDC source picks it up within a second"
        )
        if not args.wait:
            return 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.wait_timeout
        while loop.time() < deadline:
            cur = await conn.execute(
                "select processed_at, result from eventpipe.cdc_signals where id = %s", (sig,)
            )
            row = await cur.fetchone()
            if row and row[0] is not None:
                if row[1] != "queued":
                    raise CliError(f"the source {row[1]}")
                cur = await conn.execute(
                    "select table_name, status, error, rows_read from eventpipe.cdc_snapshots"
                    " where slot = %s and kind = 'incremental' and table_name = any(%s)"
                    " and created_at >= (select created_at from eventpipe.cdc_signals"
                    " where id = %s)",
                    (slot_name, tables, sig),
                )
                snaps = await cur.fetchall()
                if snaps and all(st in ("done", "failed") for _t, st, _e, _n in snaps):
                    failed = [(t, e) for t, st, e, _n in snaps if st == "failed"]
                    if failed:
                        raise CliError(
                            "; ".join(f"snapshot of {t} failed: {e}" for t, e in failed), 1
                        )
                    err_console.print(f"snapshot done: {sum(n for *_x, n in snaps)} rows")
                    return 0
            await asyncio.sleep(0.5)
        raise CliError(
            "the snapshot did not finish in time (is a CDC source running for this slot?)", 1
        )
    finally:
        await conn.close()


def cmd_snapshot(args: argparse.Namespace) -> int:
    return asyncio.run(_snapshot(args, settings_from_args(args)))


# ----------------------------------------------------------------- drop-slot
async def _drop(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from eventpipe.connectors.postgres_cdc import slot as slots
    from eventpipe.connectors.postgres_cdc import state
    from eventpipe.connectors.postgres_cdc.lock import holder_pid

    eventpipe_url = settings.database.url.get_secret_value()
    source = _cdc_sources(settings).get(args.slot)
    conn = await _connect(_captured_url(settings, source[1] if source else None))
    try:
        info = await slots.slot_info(conn, args.slot)
        if info is None:
            raise CliError(f"no replication slot named {args.slot!r} (`eventpipe cdc status`)")
        reader = await holder_pid(conn, f"slot:{args.slot}")
        if info.active or reader is not None:
            raise CliError(
                f"slot {args.slot} is read by an eventpipe CDC source (backend pid "
                f"{reader or info.active_pid}): stop that source first"
            )
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError("not a terminal, so cannot ask: pass --yes to drop the slot")
            err_console.print(
                f"Dropping slot [bold]{args.slot}[/] loses the changes it still holds "
                f"({_bytes(info.lag_bytes)} of WAL not yet confirmed); a source reading it "
                "starts over (with `snapshot: initial` it re-reads its tables)."
            )
            prompt = f"Type the slot name ({args.slot}) to drop it: "
            answer = (await asyncio.to_thread(input, prompt)).strip()
            if answer != args.slot:
                err_console.print("not dropped")
                return 1
        try:
            await slots.drop_slot(conn, args.slot)
        except psycopg.errors.ObjectInUse as exc:
            raise CliError(f"slot {args.slot} became active: {str(exc).strip()}") from exc
    finally:
        await conn.close()
    conn = await _connect(eventpipe_url)
    try:
        with contextlib.suppress(psycopg.errors.UndefinedTable):
            await state.forget_slot(conn, args.slot)
    finally:
        await conn.close()
    err_console.print(f"dropped slot {args.slot}")
    return 0


def cmd_drop_slot(args: argparse.Namespace) -> int:
    return asyncio.run(_drop(args, settings_from_args(args)))
