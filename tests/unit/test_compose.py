"""compose/ describes the production stack with the same settings names we read."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from eventpipe.settings import env_var_names

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())


def test_services_present() -> None:
    services = _compose()["services"]
    assert set(services) >= {"kafka", "postgres", "eventpipe"}
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["postgres"]["image"] == "postgres:16"
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


def test_dockerfile_copies_every_package_folder() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for folder in [
        "eventpipe",
        "connectors",
        "transforms",
        "pipelines",
        "schema_registry",
        "dlq",
        "backfill",
    ]:
        assert re.search(rf"^COPY {folder} ", text, re.M), folder
