"""compose/ describes the production stack with the same settings names we read.

No Docker engine here, so the file is checked for what `docker compose up` needs:
data kept in the volumes, the demo's table created, the ports the README's
commands use published, a small build context, the PostgreSQL major of `make dev`.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from eventpipe.settings import env_var_names

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())


def test_services_present() -> None:
    services = _compose()["services"]
    assert set(services) >= {"kafka", "postgres", "eventpipe"}
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert "wal_level=logical" in services["postgres"]["command"]
    assert services["eventpipe"]["build"]["dockerfile"] == "Dockerfile"
    assert (ROOT / "Dockerfile").exists()


def test_eventpipe_env_names_are_settings_names() -> None:
    env = _compose()["services"]["eventpipe"]["environment"]
    known = env_var_names()
    ours = [k for k in env if k.startswith("EVENTPIPE_")]
    assert "EVENTPIPE_KAFKA_BOOTSTRAP" in ours and "EVENTPIPE_DATABASE_URL" in ours
    unknown = [k for k in ours if k not in known]
    assert not unknown, f"compose sets env vars the settings do not read: {unknown}"


def test_dockerfile_copies_the_package() -> None:
    # Every package lives under eventpipe/ (tests/unit/test_packaging.py), so the
    # image needs that folder and the project files.
    text = (ROOT / "Dockerfile").read_text()
    for copied in ("eventpipe", "pyproject.toml"):
        assert re.search(rf"^COPY .*\b{re.escape(copied)}\b", text, re.M), copied
    tops = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert tops <= {"eventpipe", "bench", "tests"}, f"packages outside eventpipe/: {tops}"


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source (named volume or host path) of each mount."""
    out = {}
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        out[target] = source
    return out


def _under(path: str, mounts: dict[str, str]) -> str | None:
    for target, source in mounts.items():
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source
    return None


def test_kafka_keeps_its_log_in_its_volume() -> None:
    # Configured by environment only, apache/kafka falls back to /tmp/kafka-logs:
    # the volume would stay empty and the data go with the container.
    c = _compose()
    kafka = c["services"]["kafka"]
    log_dirs = kafka["environment"].get("KAFKA_LOG_DIRS")
    assert log_dirs, "KAFKA_LOG_DIRS is not set"
    for d in str(log_dirs).split(","):
        source = _under(d, _volumes(kafka))
        assert source in c["volumes"], f"{d} is not in a named volume"


def test_postgres_keeps_its_data_in_its_volume_and_matches_dev() -> None:
    from eventpipe.embedded.postgres import _bin_dir

    c = _compose()
    pg = c["services"]["postgres"]
    out = subprocess.run(
        [str(_bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    dev_major = re.search(r"(\d+)\.\d+", out).group(1)  # type: ignore[union-attr]
    assert pg["image"] == f"postgres:{dev_major}", (pg["image"], out)
    # From PostgreSQL 18 the image keeps PGDATA in /var/lib/postgresql/<major>/docker
    # and refuses a volume at the old /var/lib/postgresql/data.
    assert _volumes(pg).get("/var/lib/postgresql") in c["volumes"]


def _mounted_config() -> dict[str, Any]:
    svc = _compose()["services"]["eventpipe"]
    cfg_path = svc["command"][svc["command"].index("-c") + 1]
    source = _volumes(svc)[cfg_path]
    return yaml.safe_load((ROOT / "compose" / source).resolve().read_text())


def test_the_demo_tables_are_created_at_first_start() -> None:
    # `embedded.init_sql` is run only by `eventpipe dev`: in compose, PostgreSQL's own
    # init directory creates every table the mounted config's Postgres sinks write.
    pg = _compose()["services"]["postgres"]
    init_sql = "\n".join(
        (ROOT / "compose" / source).resolve().read_text()
        for target, source in _volumes(pg).items()
        if target.startswith("/docker-entrypoint-initdb.d/") and target.endswith(".sql")
    )
    tables = [
        sink["postgres"]["table"]
        for p in _mounted_config()["pipelines"]
        for sink in p["sinks"]
        if "postgres" in sink
    ]
    assert tables
    for table in tables:
        name = table if "." in table else f"public.{table}"
        rx = rf"create table (if not exists )?({re.escape(name)}|{re.escape(name.split('.')[1])})\b"
        assert re.search(rx, init_sql, re.I), f"no init script creates {table}"


def _ports(service: dict[str, Any]) -> dict[int, int]:
    """host port -> container port."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        out[int(parts[-2])] = int(parts[-1])
    return out


def test_host_reaches_kafka_and_postgres_as_the_readme_commands_do() -> None:
    services = _compose()["services"]
    # `eventpipe publish` / `tail` default to 127.0.0.1:9092, psql to 127.0.0.1:5432.
    assert _ports(services["postgres"]).get(5432) == 5432
    kafka = services["kafka"]
    env = kafka["environment"]
    container_port = _ports(kafka).get(9092)
    assert container_port is not None, "Kafka publishes no host port 9092"
    listeners = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    names = {
        item.split("://")[1].rsplit(":", 1)[1]: item.split("://")[0]
        for item in env["KAFKA_LISTENERS"].split(",")
    }
    host_listener = names[str(container_port)]
    assert listeners[host_listener] in ("localhost:9092", "127.0.0.1:9092")
    # ... and eventpipe, inside the network, uses a listener advertised by service name.
    bootstrap = services["eventpipe"]["environment"]["EVENTPIPE_KAFKA_BOOTSTRAP"]
    assert bootstrap in listeners.values() and bootstrap.startswith("kafka:")
    protocols = dict(i.split(":") for i in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(names.values()) <= set(protocols)


def test_build_context_leaves_out_local_state() -> None:
    ignore = ROOT / ".dockerignore"
    assert ignore.exists(), "no .dockerignore: the context carries .venv and .eventpipe"
    patterns = [
        line.strip().rstrip("/")
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        hit = False
        for pat in patterns:
            neg = pat.startswith("!")
            pat = pat.lstrip("!").lstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
                hit = not neg
        return hit

    for local in (".venv", ".eventpipe", ".git", "build", ".mypy_cache"):
        assert ignored(local), local
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert not ignored(src), f"{src} is copied by the Dockerfile but ignored"
