"""The plugin surface: plugin values, the catalog the service is composed with, the
sink base's lifecycle, and the meter a component's status is made from."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from eventpipe.envelope import CloudEvent
from eventpipe.plugin import Plugin, PluginConfig, by_type
from eventpipe.service.catalog import CATALOG, PIPELINE, SINKS, SOURCE_ROLES, SOURCES
from eventpipe.sink import Sink
from eventpipe.status import Activity, ComponentStatus, ErrorInfo, RateMeter


class _Cfg(PluginConfig):
    path: str


class _Sink(Sink):
    type_name = "memory-test"

    async def write_batch(self, events: Sequence[CloudEvent]) -> None: ...

    def status(self) -> ComponentStatus:
        return ComponentStatus(self.name, self.kind, self.type_name, "running")


def test_the_catalog_lists_every_built_in_plugin_once() -> None:
    assert sorted(CATALOG.sources) == ["kafka", "outbox", "postgres_cdc", "webhook"]
    assert sorted(CATALOG.sinks) == ["http", "outbox", "postgres", "topic"]
    assert set(SOURCE_ROLES) == set(CATALOG.sources)
    for p in (*SOURCES, *SINKS, PIPELINE):
        assert p.summary and p.type and p.kind in ("source", "sink", "pipeline")
    # every source entry model names its type, so `sources:` is one discriminated union
    for t, p in CATALOG.sources.items():
        assert p.config.model_fields["type"].annotation.__args__ == (t,)  # type: ignore[union-attr]


def test_a_type_listed_twice_is_refused() -> None:
    sink = Plugin("sink", "x", _Cfg, lambda c, n, ctx: None, "one")
    with pytest.raises(ValueError, match="sink type 'x' is listed twice"):
        by_type([sink, sink])


async def test_unclosed_sink_warns() -> None:
    s = _Sink(_Cfg(path="x"), name="leaky")
    await s.start()
    with pytest.warns(ResourceWarning, match="leaky"):
        s.__del__()
    await s.stop()  # a component's stop() closes it
    assert not s._open


def test_plugin_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        _Cfg.model_validate({"path": "x", "pth": "y"})


# -------------------------------------------------------------------- the meter
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_meter_counts_the_last_window_only() -> None:
    clock = Clock()
    m = RateMeter(window_s=60, clock=clock)
    m.mark(30)
    clock.now += 20
    m.mark(30)
    clock.now += 20  # 40 s since the meter was made
    assert m.total == 60
    assert m.rate() == pytest.approx(60 / 40)
    clock.now += 30  # the first 30 are older than a minute now
    assert m.rate() == pytest.approx(30 / 60)
    clock.now += 60
    assert m.rate() == 0.0 and m.total == 60


def test_meter_rate_before_a_full_window_is_over_the_time_it_ran() -> None:
    clock = Clock()
    m = RateMeter(window_s=60, clock=clock)
    clock.now += 10
    m.mark(50)
    assert m.rate() == pytest.approx(50 / 10)
    clock.now += 0.5  # within the first second the span counts as one second
    fresh = RateMeter(window_s=60, clock=clock)
    fresh.mark(7)
    assert fresh.rate() == pytest.approx(7.0)


def test_meter_reuses_a_bucket_a_window_later() -> None:
    clock = Clock()
    m = RateMeter(window_s=5, clock=clock)
    m.mark(100)
    clock.now += 5  # the same bucket (second % 5), a window later: starts again
    m.mark(1)
    assert m.rate() == pytest.approx(1 / 5)
    m.mark(0)  # nothing
    m.mark(-3)
    assert m.total == 101


def test_status_snapshot_is_json_able() -> None:
    a = Activity()
    a.events_in.mark(3)
    a.events_out.mark(2)
    a.dead_letters["decode"] += 1
    a.failed(ValueError("bad"))
    child = ComponentStatus("p/pg", "sink", "postgres", "paused", details={"circuit": "open"})
    st = a.status(name="p", kind="pipeline", type="pipeline", state="running", children=[child])
    d = st.to_dict()
    assert (d["total_in"], d["total_out"], d["dead_letters"]) == (3, 2, {"decode": 1})
    assert d["last_error"]["class"] == "builtins.ValueError" and d["last_error"]["message"] == "bad"
    assert d["children"][0]["state"] == "paused"
    assert isinstance(ErrorInfo.of(KeyError()).message, str)
