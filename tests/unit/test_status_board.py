"""The status of a process's components as one snapshot (what /v1/status, `eventpipe
status` and the console show), its sampled history, and how they are drawn: the
console's sparklines, the navigation, the CLI's table and exit status."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from eventpipe.cli import status as status_cli
from eventpipe.cli.common import CliError
from eventpipe.console.nav import SECTIONS
from eventpipe.console.render import SPARK_H, SPARK_W, spark
from eventpipe.plugin import Component, Kind
from eventpipe.status import RECENT_ERRORS, Activity, ComponentStatus
from eventpipe.status_board import StatusBoard
from tests.helpers import SERVICE_ENV


class Fake(Component):
    def __init__(self, kind: Kind, name: str, st: ComponentStatus, health: str = "ok") -> None:
        self.kind = kind  # type: ignore[misc]
        self.name = name
        self.st = st
        self._health = health

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> ComponentStatus:
        return self.st

    def health(self) -> str:
        return self._health


def _st(name: str, state: str = "running", **more: Any) -> ComponentStatus:
    return ComponentStatus(name=name, kind="pipeline", type="pipeline", state=state, **more)  # type: ignore[arg-type]


def test_snapshot_says_what_needs_attention() -> None:
    sink = ComponentStatus(name="p2/http", kind="sink", type="http", state="paused")
    board = StatusBoard(
        [
            Fake("pipeline", "p1", _st("p1", lag={"t[0]": 3, "t[1]": 4})),
            Fake("pipeline", "p2", _st("p2", children=[sink])),  # a circuit is open
            Fake("pipeline", "p3", _st("p3", "waiting"), health="waiting for subject 's'"),
            Fake("source", "hook", _st("hook", "waiting")),  # standby: nothing wrong
            Fake("source", "cdc", _st("cdc", "stalled")),
        ]
    )
    snap = board.snapshot()
    assert snap["ok"] is False
    assert snap["attention"] == ["pipeline:p2", "pipeline:p3", "source:cdc"]
    first = snap["components"][0]
    assert (first["check"], first["health"], first["lag_total"], first["attention"]) == (
        "pipeline:p1",
        "ok",
        7,
        False,
    )
    assert snap["components"][2]["health"] == "waiting for subject 's'"
    assert StatusBoard([Fake("pipeline", "p1", _st("p1"))]).snapshot()["ok"] is True
    assert board.find("pipeline:p3") is board.components[2]
    assert board.find("hook") is board.components[3]
    assert board.find("nope") is None


def test_history_keeps_the_last_points_of_each_component() -> None:
    now = [1000.0]
    st = _st("p", lag={"t[0]": 0})
    board = StatusBoard([Fake("pipeline", "p", st)], interval_s=10, points=3, clock=lambda: now[0])
    for i in range(5):
        st.rate_in, st.rate_out, st.lag = float(i), i / 2, {"t[0]": i, "t[1]": 1}
        board.sample()
        now[0] += 10
    h = board.history()
    assert (h["interval_s"], h["points"]) == (10, 3)
    series = h["components"]["pipeline:p"]
    assert series == {
        "at": [1020.0, 1030.0, 1040.0],
        "rate_in": [2.0, 3.0, 4.0],
        "rate_out": [1.0, 1.5, 2.0],
        "lag": [3, 4, 5],
    }
    assert board.history(["source:x"])["components"] == {}


def test_a_component_keeps_its_recent_errors_bounded_newest_last() -> None:
    activity = Activity()
    for i in range(RECENT_ERRORS + 5):
        activity.failed(ValueError(f"bad {i}"))
    st = activity.status(name="p", kind="pipeline", type="pipeline", state="running")
    messages = [e.message for e in st.recent_errors]
    assert len(messages) == RECENT_ERRORS
    assert messages[0] == "bad 5" and messages[-1] == f"bad {RECENT_ERRORS + 4}"
    assert st.last_error is not None and st.last_error.message == messages[-1]
    assert st.to_dict()["recent_errors"][-1]["class"] == "builtins.ValueError"


def test_sparkline_spans_the_history_newest_at_the_right_and_the_largest_at_the_top() -> None:
    def points(values: list[float]) -> list[tuple[float, float]]:
        return [(float(x), float(y)) for x, y in (p.split(",") for p in spark(values).split())]

    assert spark([]) == ""
    assert points([0.0, 5.0, 10.0]) == [(0.0, SPARK_H - 1), (SPARK_W / 2, 12.0), (SPARK_W, 1.0)]
    assert points([3.0]) == [(0.0, 1.0), (SPARK_W, 1.0)]  # one point: a flat line
    assert {y for _, y in points([0.0, 0.0])} == {SPARK_H - 1}


def test_the_overview_section_holds_the_front_page_and_the_pipeline_pages() -> None:
    overview = SECTIONS[0]
    assert overview.label == "Overview"
    assert overview.is_active("/console/") and overview.is_active("/console/pipelines/orders")
    assert not overview.is_active("/console/dlq")
    dlq = next(s for s in SECTIONS if s.path == "dlq")
    assert dlq.is_active("/console/dlq?pipeline=x") and not dlq.is_active("/console/")


SNAP: dict[str, Any] = {
    "ok": False,
    "attention": ["pipeline:orders"],
    "at": "2026-12-01T10:00:00+00:00",
    "components": [
        {
            "check": "pipeline:orders",
            "health": "ok",
            "attention": True,
            "name": "orders",
            "kind": "pipeline",
            "type": "pipeline",
            "state": "paused",
            "rate_in": 12.345,
            "rate_out": 0.5,
            "lag": {f"orders[{p}]": p for p in range(8)},
            "lag_total": 28,
            "dead_letters": {"sink": 2, "decode": 1},
            "last_error": {
                "message": "connection refused",
                "class": "x.SinkUnavailableError",
                "at": "2026-12-01T09:57:00+00:00",
            },
            "recent_errors": [],
            "details": {"schemas": [{"subject": "orders-value", "version": 2}]},
            "children": [
                {
                    "name": "orders/http",
                    "type": "http",
                    "kind": "sink",
                    "state": "paused",
                    "rate_out": 0.0,
                    "dead_letters": {},
                    "last_error": None,
                    "details": {"circuit": "open"},
                }
            ],
        },
        {
            "check": "cdc:shop",
            "health": "ok",
            "name": "shop",
            "kind": "source",
            "type": "postgres_cdc",
            "state": "running",
            "rate_in": 0.0,
            "rate_out": 3.0,
            "lag": {},
            "dead_letters": {},
            "last_error": None,
            "details": {"replication": "active", "slot_lag_bytes": 3 * 1024 * 1024},
            "children": [],
        },
    ],
}


def test_the_table_shows_state_rates_lag_by_partition_dead_letters_errors_and_details() -> None:
    console = Console(width=220, record=True)
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    console.print(status_cli.render(SNAP, "http://127.0.0.1:8080", now=now))
    text = console.export_text()
    for expected in (
        "pipeline:orders",
        "paused",
        "12.3",
        "orders[0] 0",
        "orders[5] 5",
        "+2 more",
        "decode 1, sink 2",
        "connection refused",
        "3m ago",
        "orders-value v2",
        "orders/http",
        "circuit open",
        "cdc:shop",
        "replication active",
        "slot lag 3.0 MB",
        "needs attention: pipeline:orders",
    ):
        assert expected in text, (expected, text)
    assert status_cli.exit_code(SNAP) == 1
    assert status_cli.exit_code({**SNAP, "ok": True}) == 0


def _args(**kw: Any) -> argparse.Namespace:
    base = {"config": None, "url": None, "component": None, "watch": False, "json": False}
    return argparse.Namespace(**{**base, **kw})


def test_the_service_is_found_by_url_or_by_the_configs_host_and_port(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in SERVICE_ENV:
        monkeypatch.delenv(var, raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("service:\n  host: 0.0.0.0\n  port: 8181\n  admin_token: tok-123456\n")
    assert status_cli.target(_args(config=str(cfg))) == ("http://127.0.0.1:8181", "tok-123456")
    assert status_cli.target(_args(config=str(cfg), url="http://h:9/")) == (
        "http://h:9",
        "tok-123456",
    )
    assert status_cli.target(_args()) == ("http://127.0.0.1:8080", None)
    monkeypatch.setenv("EVENTPIPE_SERVICE_ADMIN_TOKEN", "from-env-token")
    assert status_cli.target(_args())[1] == "from-env-token"
    with pytest.raises(CliError, match="with its scheme"):
        status_cli.target(_args(url="h:9"))
    cfg.write_text("service:\n  port: 0\n")
    with pytest.raises(CliError, match="pass --url"):
        status_cli.target(_args(config=str(cfg)))


def test_an_error_is_aged_in_words() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    ago = {
        s: status_cli._age((now - timedelta(seconds=s)).isoformat(), now)
        for s in (5, 600, 9000, 200000)
    }
    assert ago == {5: "5s ago", 600: "10m ago", 9000: "2h ago", 200000: "2d ago"}
