"""``eventpipe check -c FILE``: validate a config without running it.

First what ``eventpipe run`` checks at load (every section, every pipeline, each
problem with its path); then, unless ``--offline``, what only the live systems
can tell: the start-time checks the service runs (:mod:`eventpipe.preflight`:
tables and columns of Postgres sinks, sources' topics, schema subjects) against
the broker, database and registries the config names.  A system that does not
answer within ``--timeout`` is skipped with a note, not counted as a problem; a
pipeline's schema subject that is not registered yet is a warning (the pipeline
waits for it when it runs).
Nothing is created or changed.  Exit 0 when no problem was found, 2 otherwise
(as ``rpk connect lint`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from eventpipe import loop
from eventpipe.cli.common import (
    CliError,
    add_command,
    add_config_args,
    cli_overrides,
    err_console,
    setup_logging,
)
from eventpipe.errors import ConfigError, DatabaseUnavailableError, is_retriable

if TYPE_CHECKING:
    from eventpipe.preflight import Problem
    from eventpipe.service.config import ServiceConfig

ALL_ROLES = ["ingest", "pipelines", "cdc"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "check",
        "validate a config: offline, then against the broker, database and registry "
        "when they answer (exit 0 clean, 2 problems)",
    )
    add_config_args(p, database=True, kafka=True)
    p.add_argument("--offline", action="store_true", help="check the file only; contact nothing")
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for each of the broker and the database (default 5)",
    )
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    if not args.config:
        raise CliError("pass -c FILE: the config to check")
    from eventpipe.service.config import read_config

    setup_logging("WARNING")
    for chatty in ("aiokafka", "psycopg.pool"):  # an unreachable system is a note below
        logging.getLogger(chatty).setLevel(logging.CRITICAL)
    notes: list[str] = []
    warnings: list[Problem] = []
    try:
        settings, problems = read_config(args.config, overrides=cli_overrides(args))
    except ConfigError as exc:
        problems = exc.problems
        notes.append("checks against the broker, database and registry skipped: fix these first")
    else:
        if args.offline:
            notes.append("checks against the broker, database and registry skipped: --offline")
        else:
            problems = problems + loop.run(_online(settings, args.timeout, notes, warnings))
    for note in notes:
        err_console.print(f"note: {note}", markup=False, soft_wrap=True)
    if warnings:  # worth knowing, not wrong: `eventpipe run` starts (and waits)
        print(f"{args.config}: {len(warnings)} warning(s)")
        for path, message in warnings:
            print(f"  {path}: {message}")
    if not problems:
        print(f"{args.config}: no problems")
        return 0
    print(f"{args.config}: {len(problems)} problem(s)")
    for path, message in problems:
        print(f"  {path}: {message}")
    return 2


async def _online(
    settings: ServiceConfig, timeout_s: float, notes: list[str], warnings: list[Problem]
) -> list[Problem]:
    from eventpipe.db.pool import open_pool
    from eventpipe.kafka.admin import TopicAdmin
    from eventpipe.preflight import Reach
    from eventpipe.service.checks import run_checks

    admin: TopicAdmin | None = TopicAdmin(settings.kafka)
    assert admin is not None
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except Exception as exc:
        if not (is_retriable(exc) or isinstance(exc, TimeoutError)):
            raise
        with contextlib.suppress(Exception):
            await admin.stop()
        admin = None
        notes.append(f"broker checks skipped: {settings.kafka.bootstrap} did not answer ({exc})")
    db = settings.database.model_copy(
        update={"pool_min": 1, "pool_max": 2, "connect_timeout_s": timeout_s}
    )
    pool = None
    try:
        pool = await open_pool(db, name="eventpipe-check")
    except DatabaseUnavailableError as exc:
        notes.append(f"database checks skipped: {exc}")
    reach = Reach(settings, admin, pool, timeout_s=timeout_s)
    try:
        return await run_checks(settings, reach, ALL_ROLES)
    finally:
        notes.extend(reach.skipped)
        warnings.extend(reach.warnings)
        if admin is not None:
            await admin.stop()
        if pool is not None:
            await pool.close()
