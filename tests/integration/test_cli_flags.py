"""The shared flags reach the real database and broker, over the environment and the
config file: every variable and the file here name a server that is not there, so
a command succeeds only if it used the flag (subprocesses, as a user runs them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from eventpipe.settings import Settings

NOWHERE_DB = "postgresql://postgres@127.0.0.1:9/nowhere?connect_timeout=2"
NOWHERE_KAFKA = "127.0.0.1:9"


def ep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"database:\n  url: {NOWHERE_DB}\nkafka:\n  bootstrap: {NOWHERE_KAFKA}\n")
    env = dict(
        os.environ,
        EVENTPIPE_DATABASE_URL=NOWHERE_DB,
        EVENTPIPE_KAFKA_BOOTSTRAP=NOWHERE_KAFKA,
    )
    return subprocess.run(
        [sys.executable, "-m", "eventpipe", *args, "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_migrate_uses_database_url(settings: Settings, tmp_path: Path) -> None:
    url = settings.database.url.get_secret_value()
    r = ep(tmp_path, "migrate", "--database-url", url)
    assert r.returncode == 0, r.stderr
    assert "up to date" in r.stderr or "applied" in r.stderr


def test_cdc_status_uses_database_url(settings: Settings, tmp_path: Path) -> None:
    url = settings.database.url.get_secret_value()
    r = ep(tmp_path, "cdc", "status", "--json", "--database-url", url)
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        assert "slot" in orjson.loads(line)


def test_check_reaches_the_database_and_broker_the_flags_name(
    settings: Settings, tmp_path: Path
) -> None:
    r = ep(
        tmp_path,
        "check",
        "--database-url",
        settings.database.url.get_secret_value(),
        "--bootstrap",
        settings.kafka.bootstrap,
        "--timeout",
        "20",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no problems" in r.stdout
    assert "skipped" not in r.stderr, r.stderr
