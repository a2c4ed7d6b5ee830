from __future__ import annotations

from pathlib import Path

import pytest

from eventpipe.errors import ConfigError
from eventpipe.settings import env_var_names, load_settings


def test_defaults_load_without_a_file() -> None:
    s = load_settings(environ={})
    assert s.kafka.acks == "all"
    assert s.service.port == 8080


def test_env_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  bootstrap: file:9092\ndatabase:\n  url: postgresql://f/db\n")
    s = load_settings(
        cfg,
        environ={
            "EVENTPIPE_KAFKA_BOOTSTRAP": "env:9092",
            "EVENTPIPE_SERVICE_PORT": "9999",
        },
    )
    assert s.kafka.bootstrap == "env:9092"
    assert s.service.port == 9999
    assert s.database.url.get_secret_value() == "postgresql://f/db"


def test_every_problem_is_reported_at_once_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "service:\n  port: -1\n  prot: 1\nkafka:\n  linger_ms: abc\n"
        "topics:\n  - name: ok\n  - name: 'bad topic'\n  - name: ok\n"
    )
    with pytest.raises(ConfigError) as ei:
        load_settings(cfg, environ={})
    paths = {p for p, _ in ei.value.problems}
    assert {"service.port", "service.prot", "kafka.linger_ms", "topics[1].name"} <= paths
    assert "did you mean 'port'" in dict(ei.value.problems)["service.prot"]
    assert str(cfg) in str(ei.value)


def test_cross_field_rules_checked_at_load() -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(
            environ={"EVENTPIPE_DATABASE_POOL_MIN": "5", "EVENTPIPE_DATABASE_POOL_MAX": "2"}
        )
    assert ei.value.problems[0][0] == "database.pool_min"


def test_duplicate_topics_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("topics:\n  - name: a\n  - name: a\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(cfg, environ={})
    assert ei.value.problems == [("topics[1].name", "topic 'a' is listed twice")]


def test_missing_file_and_bad_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; pass -c PATH"):
        load_settings(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, environ={})


def test_env_var_names_cover_the_documented_ones() -> None:
    names = env_var_names()
    assert names["EVENTPIPE_KAFKA_BOOTSTRAP"] == "kafka.bootstrap"
    assert names["EVENTPIPE_DATABASE_URL"] == "database.url"


def test_secrets_are_not_printed() -> None:
    s = load_settings(environ={"EVENTPIPE_DATABASE_URL": "postgresql://u:hunter2@h/db"})
    assert "hunter2" not in repr(s)


def test_http_limits_are_settings_with_env_vars() -> None:
    s = load_settings(
        environ={
            "EVENTPIPE_SERVICE_HEADER_TIMEOUT_S": "2.5",
            "EVENTPIPE_SERVICE_IDLE_TIMEOUT_S": "30",
            "EVENTPIPE_SERVICE_MAX_HEADER_BYTES": "4096",
            "EVENTPIPE_SERVICE_MAX_HEADERS": "64",
        }
    )
    svc = s.service
    assert (svc.header_timeout_s, svc.idle_timeout_s) == (2.5, 30)
    assert (svc.max_header_bytes, svc.max_headers) == (4096, 64)
    with pytest.raises(ConfigError) as exc:
        load_settings(environ={"EVENTPIPE_SERVICE_HEADER_TIMEOUT_S": "0"})
    assert exc.value.problems[0][0] == "service.header_timeout_s"


def test_console_settings_nest_and_take_env_vars(tmp_path: Path) -> None:
    assert env_var_names()["EVENTPIPE_SERVICE_CONSOLE_PUBLIC_READ"] == "service.console.public_read"
    assert "EVENTPIPE_SERVICE_CONSOLE" not in env_var_names()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("service:\n  port: 9000\n  console:\n    session_ttl_s: 600\n")
    s = load_settings(cfg, environ={"EVENTPIPE_SERVICE_CONSOLE_PUBLIC_READ": "true"})
    # the variable sets one key of the file's console section, keeping the others
    assert s.service.console.public_read is True
    assert s.service.console.session_ttl_s == 600
    assert s.service.port == 9000 and s.service.console.enabled is True
    with pytest.raises(ConfigError) as ei:
        load_settings(environ={"EVENTPIPE_SERVICE_CONSOLE_SESSION_TTL_S": "5"})
    assert ei.value.problems[0][0] == "service.console.session_ttl_s"
