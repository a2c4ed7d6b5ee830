"""``eventpipe run --workers``: the restart backoff, the flag's values, and the
merge of the workers' metrics and status (no processes: the integration test
tests/integration/test_run_workers.py runs the real tree)."""

from __future__ import annotations

import argparse
import os
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventpipe.cli import run as run_cli
from eventpipe.cli.main import build_parser
from eventpipe.service.app import OPS_ROUTES
from eventpipe.service.workers.merge import (
    MetricsMerger,
    exposition,
    merge_status,
    supervisor_families,
)
from eventpipe.service.workers.ops_api import build_ops_app
from eventpipe.service.workers.supervisor import RestartBackoff, Supervisor, describe_exit
from eventpipe.settings import Settings


# ------------------------------------------------------------------ backoff
def test_restart_backoff_doubles_to_its_cap_and_resets_after_a_stable_run() -> None:
    b = RestartBackoff(initial_s=0.5, cap_s=4.0, stable_s=60.0)
    waits = [b.next_wait(uptime_s=1.0) for _ in range(6)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.next_wait(uptime_s=60.0) == 0.5  # it ran long enough: a new series
    assert b.next_wait(uptime_s=59.9) == 1.0


def test_exit_described_by_signal_or_status() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(3) == "exit status 3"


# --------------------------------------------------------------- the flag
def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


@pytest.mark.parametrize("bad", ["0", "x", "-2", "1.5"])
def test_bad_workers_values_name_the_fix(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse("--workers", bad)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--workers: {bad!r}: give a number of processes, 1 or more, or `auto`" in err
    assert "--workers auto" in err


@pytest.mark.parametrize("config", [{}, {"service": {"workers": "auto"}}])
def test_workers_auto_is_the_number_of_cores(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, config: dict[str, Any]
) -> None:
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    started: list[int] = []
    monkeypatch.setattr(run_cli, "_supervise", lambda args, settings, n: started.append(n) or 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    argv = ["-c", str(path)] + ([] if config else ["--workers", "auto"])
    assert run_cli.cmd_run(_parse(*argv)) == 0
    assert started == [3]


def test_workers_in_the_config_refused_with_its_path(tmp_path: Any) -> None:
    from eventpipe.errors import ConfigError
    from eventpipe.settings import read_settings

    with pytest.raises(ConfigError) as exc:
        read_settings(None, environ={"EVENTPIPE_SERVICE_WORKERS": "0"})
    assert "service.workers" in str(exc.value) and "`auto`" in str(exc.value)
    settings, problems = read_settings(None, environ={"EVENTPIPE_SERVICE_WORKERS": "4"})
    assert (settings.service.workers, problems) == (4, [])


# --------------------------------------------------------------- metrics
def _metrics(requests: float, lag: float, start: float) -> str:
    return f"""# HELP eventpipe_http_requests_total HTTP requests served
# TYPE eventpipe_http_requests_total counter
eventpipe_http_requests_total{{route="healthz",method="GET",status="200"}} {requests}
eventpipe_http_requests_created{{route="healthz",method="GET",status="200"}} 1.7e9
# HELP eventpipe_publish_seconds publish
# TYPE eventpipe_publish_seconds histogram
eventpipe_publish_seconds_bucket{{le="0.1"}} {requests}
eventpipe_publish_seconds_bucket{{le="+Inf"}} {requests}
eventpipe_publish_seconds_count {requests}
eventpipe_publish_seconds_sum {requests / 10}
# HELP eventpipe_pipeline_lag lag
# TYPE eventpipe_pipeline_lag gauge
eventpipe_pipeline_lag{{pipeline="p"}} {lag}
# HELP process_start_time_seconds start
# TYPE process_start_time_seconds gauge
process_start_time_seconds {start}
"""


def _values(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
    }


REQ = (
    "eventpipe_http_requests_total",
    (("method", "GET"), ("route", "healthz"), ("status", "200")),
)


def test_counters_and_histograms_summed_gauges_per_worker() -> None:
    m = MetricsMerger()
    m.observe(0, 100, _metrics(3, 7, 1.0))
    m.observe(1, 101, _metrics(5, 2, 2.0))
    got = _values(exposition(m.merged([0, 1]).values()))
    assert got[REQ] == 8
    assert got[("eventpipe_publish_seconds_count", ())] == 8
    assert got[("eventpipe_publish_seconds_bucket", (("le", "+Inf"),))] == 8
    assert got[("eventpipe_pipeline_lag", (("pipeline", "p"), ("worker", "0")))] == 7
    assert got[("eventpipe_pipeline_lag", (("pipeline", "p"), ("worker", "1")))] == 2
    assert got[("process_start_time_seconds", (("worker", "1"),))] == 2.0
    assert not [k for k in got if k[0].endswith("_created")]


def test_a_restarted_workers_counts_are_carried_and_its_old_gauges_dropped() -> None:
    m = MetricsMerger()
    m.observe(0, 100, _metrics(30, 7, 1.0))
    m.observe(1, 101, _metrics(5, 2, 2.0))
    # worker 0 died: it does not answer; its last counts still count, its gauges do not
    down = _values(exposition(m.merged([1]).values()))
    assert down[REQ] == 35
    assert ("eventpipe_pipeline_lag", (("pipeline", "p"), ("worker", "0"))) not in down
    # restarted as pid 102, counting from zero: the sum never goes down
    m.observe(0, 102, _metrics(2, 1, 3.0))
    up = _values(exposition(m.merged([0, 1]).values()))
    assert up[REQ] == 30 + 2 + 5
    m.observe(0, 102, _metrics(4, 1, 3.0))  # the same process again: no second carry
    assert _values(exposition(m.merged([0, 1]).values()))[REQ] == 30 + 4 + 5


def test_supervisor_metrics_count_restarts_and_workers_up() -> None:
    views = [
        {"worker": 0, "restarts": 2, "state": "running"},
        {"worker": 1, "restarts": 0, "state": "restarting"},
    ]
    got = _values(exposition(supervisor_families(views)))
    assert got[("eventpipe_worker_restarts_total", (("worker", "0"),))] == 2
    assert got[("eventpipe_worker_up", (("worker", "1"),))] == 0


# ---------------------------------------------------------------- status
def test_status_lists_every_workers_components_and_a_down_worker_needs_attention() -> None:
    workers = [
        {"worker": 0, "state": "running", "pid": 10},
        {"worker": 1, "state": "restarting", "pid": None},
    ]
    snap = {
        "ok": False,
        "attention": ["pipeline:p"],
        "components": [{"check": "pipeline:p"}, {"check": "source:w"}],
    }
    got = merge_status(workers, {0: snap}, "2026-12-05T00:00:00+00:00")
    assert [(c["worker"], c["check"]) for c in got["components"]] == [
        (0, "pipeline:p"),
        (0, "source:w"),
    ]
    assert got["attention"] == ["worker 0: pipeline:p", "worker 1: restarting"]
    assert got["ok"] is False and got["workers"] == workers
    fine = merge_status(workers[:1], {0: {**snap, "attention": []}}, "t")
    assert fine["ok"] is True


def test_the_supervisor_serves_the_documented_ops_routes() -> None:
    sup = Supervisor(Settings(), ["eventpipe"], 2)
    app = build_ops_app(sup)
    served = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource and r.method != "HEAD"
    }
    documented = {(d.method, d.path) for d in OPS_ROUTES}
    assert served == documented


# ------------------------------------------------------- eventpipe status
def test_eventpipe_status_shows_the_worker_of_each_component_and_asks_the_supervisor(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from eventpipe.cli import status as status_cli

    entry = {
        "check": "pipeline:p",
        "health": "ok",
        "name": "p",
        "type": "pipeline",
        "state": "running",
        "rate_in": 1.0,
        "rate_out": 1.0,
        "children": [],
    }
    workers = [
        {"worker": 0, "state": "running", "pid": 41, "restarts": 0},
        {"worker": 1, "state": "restarting", "pid": None, "restarts": 3},
    ]
    snap = merge_status(workers, {0: {"components": [entry], "attention": []}}, "t")
    console = Console(width=200, record=True)
    console.print(status_cli.render(snap, "http://127.0.0.1:8081"))
    text = console.export_text()
    assert "┃ worker ┃ component" in text
    assert "workers: 0 running (pid 41, 0 restarts); 1 restarting (3 restarts)" in text
    assert "needs attention: worker 1: restarting" in text

    for var in (
        "EVENTPIPE_SERVICE_PORT",
        "EVENTPIPE_SERVICE_WORKERS",
        "EVENTPIPE_SERVICE_OPS_PORT",
    ):
        monkeypatch.delenv(var, raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("service:\n  port: 8080\n  workers: 2\n")
    args = argparse.Namespace(config=str(cfg), url=None)
    assert status_cli.target(args)[0] == "http://127.0.0.1:8081"  # port + 1
    cfg.write_text("service:\n  port: 8080\n  workers: 2\n  ops_port: 9100\n")
    assert status_cli.target(args)[0] == "http://127.0.0.1:9100"


def test_an_ops_port_in_use_is_refused_naming_the_flag(tmp_path: Any) -> None:
    """The supervisor binds its ops port before it starts a worker: a port in use
    stops it at once (exit 2) with the flag and key to change, and no worker runs."""
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"service:\n  port: 0\n  ops_port: {port}\n")
        r = subprocess.run(
            [sys.executable, "-m", "eventpipe", "run", "-c", str(cfg), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert r.returncode == 2, r.stderr
    assert f"port {port} is already in use" in r.stderr
    assert "--ops-port" in r.stderr and "service.ops_port" in r.stderr
    assert "worker 0" not in r.stderr + r.stdout  # nothing was started
