"""`eventpipe check -c FILE --offline`: every load-time problem of a config, with
its path, exit 2; a clean config exits 0.  Nothing is contacted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from eventpipe.cli.main import main

CLEAN: dict[str, Any] = {
    "topics": [{"name": "orders"}],
    "pipelines": [
        {
            "name": "orders-out",
            "source": {"topics": ["orders"]},
            "steps": [{"jq": "{id}"}],
            "sinks": [{"topic": {"topic": "orders.out"}}],
        }
    ],
}


def _check(tmp_path: Path, cfg: dict[str, Any], *extra: str) -> int:
    path = tmp_path / "eventpipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return main(["check", "-c", str(path), "--offline", *extra])


def test_clean_config_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(tmp_path, CLEAN) == 0
    out = capsys.readouterr()
    assert "no problems" in out.out
    assert "skipped: --offline" in out.err


def test_every_problem_is_printed_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = {
        "kafka": {"security_protocol": "SASL_SSL"},
        "pipelines": [
            {
                "name": "p",
                "source": {"topics": ["in"]},
                "steps": [{"jq": "{"}],
                "sinks": [{"topic": {"name": "out"}}],
            }
        ],
    }
    assert _check(tmp_path, cfg) == 2
    out = capsys.readouterr().out
    for path in (
        "kafka.sasl_mechanism",
        "pipelines[0].steps[0].jq",
        "pipelines[0].sinks[0].topic.topic",
    ):
        assert path in out, out


def test_core_section_problems_are_printed_the_same_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(tmp_path, {"service": {"port": "x"}}) == 2
    assert "service.port" in capsys.readouterr().out


def test_missing_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(tmp_path / "nope.yaml"), "--offline"]) == 2
    assert "nope.yaml" in capsys.readouterr().out
