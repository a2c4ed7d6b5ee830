"""The shared flags reach the real database and broker, over the environment and the
config file: every variable and the file here name a server that is not there, so
a command succeeds only if it used the flag (subprocesses, as a user runs them)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import yaml
from psycopg.conninfo import make_conninfo

from eventpipe.settings import Settings

NOWHERE_DB = "postgresql://postgres@127.0.0.1:9/nowhere?connect_timeout=2"
NOWHERE_KAFKA = "127.0.0.1:9"


def ep(
    tmp_path: Path, *args: str, config: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "c.yaml"
    raw = {"database": {"url": NOWHERE_DB}, "kafka": {"bootstrap": NOWHERE_KAFKA}}
    cfg.write_text(yaml.safe_dump({**raw, **(config or {})}))
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


def test_cdc_finds_a_slot_in_its_sources_own_database(settings: Settings, tmp_path: Path) -> None:
    """--database-url is eventpipe's database; a source with its own database_url
    has its slot there: status lists it, drop-slot drops it there."""
    url = settings.database.url.get_secret_value()
    other = f"ep_captured_{uuid.uuid4().hex[:8]}"
    slot = f"{other}_slot"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create database {other}")
    other_url = make_conninfo(url, dbname=other)
    try:
        with psycopg.connect(other_url, autocommit=True) as conn:
            conn.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        config = {
            "sources": [
                {
                    "type": "postgres_cdc",
                    "name": "shop",
                    "database_url": other_url,
                    "slot": slot,
                    "tables": ["public.orders"],
                }
            ]
        }
        r = ep(tmp_path, "cdc", "status", "--json", "--database-url", url, config=config)
        assert r.returncode == 0, r.stderr
        rows = {d["slot"]: d for d in map(orjson.loads, r.stdout.splitlines())}
        assert rows[slot]["source"] == "shop" and rows[slot]["database"] == other
        assert not rows[slot].get("missing")
        r = ep(tmp_path, "cdc", "drop-slot", slot, "--yes", "--database-url", url, config=config)
        assert r.returncode == 0, r.stderr
        with psycopg.connect(other_url) as conn:
            cur = conn.execute("select 1 from pg_replication_slots where slot_name = %s", (slot,))
            assert cur.fetchone() is None
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots"
                " where slot_name = %s",
                (slot,),
            )
            conn.execute(f"drop database if exists {other}")
