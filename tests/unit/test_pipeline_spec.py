"""The pipelines: section is checked at config load, every problem at once, with paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from eventpipe.durations import parse_duration
from eventpipe.errors import ConfigError
from eventpipe.pipelines.spec import parse_pipelines
from eventpipe.service.catalog import CATALOG
from eventpipe.service.config import load_config


def load(tmp_path: Path, pipelines: list[Any]) -> Any:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({"pipelines": pipelines}))
    return load_config(p, environ={})


def problems(tmp_path: Path, pipelines: list[Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, pipelines)
    return dict(info.value.problems)


GOOD = {
    "name": "orders-enriched",
    "source": {"topics": ["shop.public.orders"], "group": "orders-enriched"},
    "validate_input": {"subject": "shop.public.orders-value"},
    "steps": [{"jq": "{id: .id}"}, {"filter": ".data.id != null"}, {"route": '"orders.x"'}],
    "validate_output": {"schema": {"type": "object"}},
    "sinks": [
        {"postgres": {"table": "orders", "columns": {"id": ".data.id"}}},
        {"topic": {"topic": "orders.enriched"}},
    ],
    "state": {"dedup_window": "24h"},
    "retry": {
        "max_attempts": 5,
        "backoff": "exponential",
        "initial": "200ms",
        "max": "30s",
        "jitter": True,
    },
    "dead_letter": {"topic": "orders-enriched.dlq"},
}


def test_the_issue_example_loads(tmp_path: Path) -> None:
    settings = load(tmp_path, [GOOD])
    (spec,) = parse_pipelines(settings.pipelines, CATALOG.sinks)
    assert spec.state.dedup_window == 86400
    assert spec.retry.initial == 0.2 and spec.retry.max == 30
    assert spec.dlq_topic == "orders-enriched.dlq" and spec.group == "orders-enriched"


def test_every_problem_is_reported_with_its_path(tmp_path: Path) -> None:
    bad = {
        **GOOD,
        "steps": [
            {"jq": "{id: .id}"},
            {"filter": ".data |"},
            {"aggregate": {"op": "sum", "window": {"tumbling": "1m"}}},
            {"route": 5},
        ],
        "sinks": [
            {"postgres": {"table": "t", "mode": "upsert", "columns": {"id": ".id"}}},
            {"nope": {}},
            {"topic": {"topic": "x", "bogus": 1}},
            {"http": {"url": "ftp://x"}},
        ],
        "retry": {"initial": "5x"},
    }
    found = problems(tmp_path, [bad, {**GOOD, "name": "orders-enriched"}])
    assert "pipelines[0].retry.initial" in found
    assert "not a duration" in found["pipelines[0].retry.initial"]
    assert "pipelines[0].steps[1].filter" in found
    assert "needs `value:`" in found["pipelines[0].steps[2].aggregate"]
    assert "pipelines[0].steps[3].route" in found
    assert "needs `key:`" in found["pipelines[0].sinks[0].postgres"]
    assert "unknown sink 'nope'" in found["pipelines[0].sinks[1]"]
    assert found["pipelines[0].sinks[2].topic.bogus"].startswith(
        "unknown key (allowed: name, topic,"
    )
    assert "http" in found["pipelines[0].sinks[3].http.url"]


def test_duplicate_names_groups_and_dlq_loops(tmp_path: Path) -> None:
    loop = {**GOOD, "name": "b", "dead_letter": {"topic": "shop.public.orders"}}
    found = problems(tmp_path, [GOOD, {**GOOD, "source": {"topics": ["a"]}}, loop])
    assert "also pipelines[0]" in found["pipelines[1].name"]
    assert "pipelines[2].source.group" in found
    assert "loop" in found["pipelines[2].dead_letter.topic"]


def test_durations() -> None:
    assert parse_duration("200ms") == 0.2
    assert parse_duration("24h") == 86400
    assert parse_duration(3) == 3.0
    with pytest.raises(ValueError):
        parse_duration("soon")
    with pytest.raises(ValueError):
        parse_duration(-1)


def test_topic_sink_needs_a_topic_or_a_route_step(tmp_path: Path) -> None:
    # `{topic: {name: x}}` reads `name` as the sink's name: every event would be
    # dead-lettered for want of a topic.  That is a load error naming the fix.
    base = {"name": "p", "source": {"topics": ["in"]}}
    found = problems(tmp_path, [{**base, "sinks": [{"topic": {"name": "out"}}]}])
    msg = found["pipelines[0].sinks[0].topic.topic"]
    assert "route" in msg and "`name:` names the sink" in msg
    # A route step before it, or a topic, is enough.
    load(tmp_path, [{**base, "steps": [{"route": '"x"'}], "sinks": [{"topic": {}}]}])
    load(tmp_path, [{**base, "sinks": [{"topic": {"topic": "out"}}]}])
