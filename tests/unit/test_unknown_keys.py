"""A misspelt or unknown config key is named with the keys its place allows and,
where one is close, the likeliest one ("did you mean"), wherever it sits: a
settings section, a source (nested and tagged parts too), a pipeline, a step, a
sink.  Every case goes through the real loader, as `eventpipe run` reads a file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from eventpipe.errors import ConfigError
from eventpipe.service.catalog import CATALOG
from eventpipe.service.config import read_config
from eventpipe.transforms.catalog import STEPS

PIPELINE: dict[str, Any] = {
    "name": "orders",
    "source": {"topics": ["shop.orders"]},
    "sinks": [{"topic": {"topic": "orders.out"}}],
}
WEBHOOK: dict[str, Any] = {
    "type": "webhook",
    "name": "billing",
    "topic": "billing.events",
    "verify": {"scheme": "github", "secrets": ["x"]},
}
KAFKA_SOURCE: dict[str, Any] = {
    "type": "kafka",
    "name": "in",
    "topic": "in.events",
    "read": {"topics": ["legacy"]},
}


def problems(tmp_path: Path, raw: dict[str, Any]) -> dict[str, str]:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    try:
        _settings, found = read_config(cfg, environ={})
    except ConfigError as exc:
        found = exc.problems
    return dict(found)


def pipeline(**changes: Any) -> dict[str, Any]:
    return {"pipelines": [{**PIPELINE, **changes}]}


def allowed(message: str) -> list[str]:
    m = re.search(r"\(allowed: ([^)]*)\)$", message)
    assert m, f"no allowed list in {message!r}"
    return m.group(1).split(", ")


# (config, path of the unknown key, the suggestion, keys the allowed list must hold)
CASES: list[tuple[str, dict[str, Any], str, str | None, set[str]]] = [
    ("root", {"kafak": {}}, "kafak", "kafka", {"service", "database", "pipelines"}),
    ("section", {"kafka": {"bootstrp": "x"}}, "kafka.bootstrp", "bootstrap", {"acks"}),
    (
        "list of models",
        {"topics": [{"name": "a", "partitons": 1}]},
        "topics[0].partitons",
        "partitions",
        {"name", "config"},
    ),
    (
        "source, its own keys and type/name",
        {"sources": [{**WEBHOOK, "nmae": "x"}]},
        "sources[0].nmae",
        "name",
        {"type", "name", "topic", "verify", "validate"},
    ),
    (
        "source, aliased key",
        {"sources": [{**WEBHOOK, "vaildate": "s"}]},
        "sources[0].vaildate",
        "validate",
        {"validate", "rate_limit"},
    ),
    (
        "source, nested model",
        {"sources": [{**KAFKA_SOURCE, "read": {"topics": ["a"], "group": "g"}}]},
        "sources[0].read.group",
        "group_id",
        {"topics", "bootstrap", "start"},
    ),
    (
        "source, nested model behind an alias",
        {"sources": [{**WEBHOOK, "validate": {"schma": {}}}]},
        "sources[0].validate.schma",
        "schema",
        {"schema", "subject", "version"},
    ),
    (
        "source, member of a tagged union",
        {
            "sources": [
                {**WEBHOOK, "verify": {"scheme": "stripe", "secrets": ["x"], "tolerance": 3}}
            ]
        },
        "sources[0].verify.stripe.tolerance",
        "tolerance_s",
        {"scheme", "secrets"},
    ),
    (
        "source, optional nested model",
        {"sources": [{**WEBHOOK, "rate_limit": {"per_second": 1, "brust": 2}}]},
        "sources[0].rate_limit.brust",
        "burst",
        {"per_second"},
    ),
    ("pipeline", pipeline(sink=[]), "pipelines[0].sink", "sinks", {"source", "steps"}),
    (
        "pipeline source",
        pipeline(source={"topics": ["a"], "start": "earliest"}),
        "pipelines[0].source.start",
        "start_from",
        {"topics", "group"},
    ),
    (
        "pipeline section",
        pipeline(retry={"max_attempt": 3}),
        "pipelines[0].retry.max_attempt",
        "max_attempts",
        {"backoff", "jitter"},
    ),
    (
        "validate_input (aliased key)",
        pipeline(validate_input={"schemas": {}}),
        "pipelines[0].validate_input.schemas",
        "schema",
        {"schema", "subject"},
    ),
    (
        "step",
        pipeline(steps=[{"jq": {"progam": "."}}]),
        "pipelines[0].steps[0].jq.progam",
        "program",
        {"program", "apply_to", "engine"},
    ),
    (
        "validate step",
        pipeline(steps=[{"validate": {"subjet": "s"}}]),
        "pipelines[0].steps[0].validate.subjet",
        "subject",
        {"schema", "schema_type", "draft", "version"},
    ),
    (
        "stateful step",
        pipeline(steps=[{"dedup": {"key": ".id", "windw": "1h"}}]),
        "pipelines[0].steps[0].dedup.windw",
        "window",
        {"key", "engine"},
    ),
    (
        "stateful step, nested model",
        pipeline(steps=[{"aggregate": {"value": ".n", "window": {"tumbles": "1m"}}}]),
        "pipelines[0].steps[0].aggregate.window.tumbles",
        "tumbling",
        {"hopping"},
    ),
    (
        "sink",
        pipeline(sinks=[{"postgres": {"table": "t", "colums": {"id": ".id"}}}]),
        "pipelines[0].sinks[0].postgres.colums",
        "columns",
        {"table", "mode", "key", "method", "url", "engine", "order_by", "name"},
    ),
    (
        "sink, nested model",
        pipeline(sinks=[{"http": {"url": "http://x", "circuit_breaker": {"threshold": 3}}}]),
        "pipelines[0].sinks[0].http.circuit_breaker.threshold",
        "failure_threshold",
        {"reset_timeout"},
    ),
    (
        "sink, optional nested model",
        pipeline(
            sinks=[{"outbox": {"aggregate_type": "'o'", "rows": {"table": "t", "colum": {}}}}]
        ),
        "pipelines[0].sinks[0].outbox.rows.colum",
        "columns",
        {"table", "mode"},
    ),
    (
        "no key is close",
        {"service": {"zzzzzz": 1}},
        "service.zzzzzz",
        None,
        {"host", "port"},
    ),
]


@pytest.mark.parametrize(
    ("raw", "path", "likely", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_an_unknown_key_names_the_allowed_ones_and_the_likeliest(
    tmp_path: Path, raw: dict[str, Any], path: str, likely: str | None, expected: set[str]
) -> None:
    found = problems(tmp_path, raw)
    assert path in found, found
    message = found[path]
    assert message.startswith("unknown key")
    if likely is None:
        assert "did you mean" not in message
    else:
        assert f"did you mean {likely!r}?" in message
    keys = allowed(message)
    assert expected <= set(keys)
    assert path.rsplit(".", 1)[-1] not in keys


def _first_key(model: type[BaseModel], but: str = "") -> str:
    keys = [f.alias or n for n, f in model.model_fields.items()]
    return next((k for k in keys if k != but), keys[0])


@pytest.mark.parametrize("kind", sorted(CATALOG.sinks))
def test_every_sink_names_its_keys(tmp_path: Path, kind: str) -> None:
    model = CATALOG.sinks[kind].config
    key = _first_key(model)
    found = problems(tmp_path, pipeline(sinks=[{kind: {key + "x": 1}}]))
    message = found[f"pipelines[0].sinks[0].{kind}.{key}x"]
    assert f"did you mean {key!r}?" in message
    assert set(allowed(message)) == {f.alias or n for n, f in model.model_fields.items()} | {"name"}


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_every_step_names_its_keys(tmp_path: Path, kind: str) -> None:
    plugin = STEPS[kind]
    model = plugin.config
    # Not the main field, and the main field given as a mapping: the full form,
    # never a shorthand (`set: {a: .x}` is a mapping of fields).
    main = next(iter(plugin.shorthand("x")[0])) if plugin.shorthand is not None else ""
    key = _first_key(model, but=main)
    raw: dict[str, Any] = {key + "x": 1}
    if main and main != key:
        raw[main] = {}
    found = problems(tmp_path, pipeline(steps=[{kind: raw}]))
    message = found[f"pipelines[0].steps[0].{kind}.{key}x"]
    assert f"did you mean {key!r}?" in message
    assert set(allowed(message)) == {f.alias or n for n, f in model.model_fields.items()}


@pytest.mark.parametrize("kind", sorted(CATALOG.sources))
def test_every_source_names_its_keys(tmp_path: Path, kind: str) -> None:
    model = CATALOG.sources[kind].config
    key = _first_key(model)
    found = problems(tmp_path, {"sources": [{"type": kind, "name": "s", key + "x": 1}]})
    message = found[f"sources[0].{key}x"]
    assert f"did you mean {key!r}?" in message
    assert set(allowed(message)) == {f.alias or n for n, f in model.model_fields.items()} | {
        "type",
        "name",
    }


@pytest.mark.parametrize(
    ("raw", "path", "likely"),
    [
        (pipeline(steps=[{"jqq": "."}]), "pipelines[0].steps[0]", "jq"),
        (pipeline(sinks=[{"postgress": {}}]), "pipelines[0].sinks[0]", "postgres"),
        ({"sources": [{"type": "webhok", "name": "a"}]}, "sources[0].type", "webhook"),
        (
            {"sources": [{**WEBHOOK, "verify": {"scheme": "strpe", "secrets": ["x"]}}]},
            "sources[0].verify",
            "stripe",
        ),
        (
            pipeline(sinks=[{"postgres": {"table": "t", "columns": {}, "mode": "upsrt"}}]),
            "pipelines[0].sinks[0].postgres.mode",
            "upsert",
        ),
    ],
    ids=["step type", "sink type", "source type", "union tag", "literal value"],
)
def test_an_unknown_name_suggests_the_likeliest(
    tmp_path: Path, raw: dict[str, Any], path: str, likely: str
) -> None:
    found = problems(tmp_path, raw)
    assert f"did you mean {likely!r}?" in found[path], found


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (
            {"sources": [{**KAFKA_SOURCE, "read": {"topics": ["a"], "on_topic_reset": "wipe"}}]},
            "sources[0].read.on_topic_reset",
        ),
        ({"kafka": {"on_topic_reset": "wipe"}}, "kafka.on_topic_reset"),
        ({"service": {"ops_port": 70000}}, "service.ops_port"),
        ({"service": {"workers": "many"}}, "service.workers"),
    ],
)
def test_a_bad_value_of_a_new_key_names_the_key(
    tmp_path: Path, raw: dict[str, Any], path: str
) -> None:
    found = problems(tmp_path, raw)
    assert path in found, found
