"""Chain: built from YAML items, every problem reported at once, run per event and batch."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from eventpipe.envelope import CloudEvent
from eventpipe.errors import ConfigError
from eventpipe.plugin import Plugin, PluginConfig
from eventpipe.sink import BatchError
from eventpipe.transforms import (
    Chain,
    ChainBatchError,
    SchemaValidationError,
    TransformError,
    routed_topic,
)
from eventpipe.transforms.base import Step
from eventpipe.transforms.catalog import STEPS
from tests.unit.test_transforms_conformance import cross_engine  # noqa: F401

pytestmark = pytest.mark.usefixtures("cross_engine")

PIPELINE_YAML = """
steps:
  - jq: '.items[] | {sku, qty, order: $__order}'
"""

CHAIN_YAML = """
- jq: '.items[] as $i | {order: .order_id, customer: .customer, sku: $i.sku, qty: $i.qty}'
- filter: '.data.qty > 1'
- set:
    subject: .data.sku
    partitionkey: .data.customer
- route: '"orders." + (.data.sku | ascii_downcase)'
- drop_fields: [customer]
- validate:
    schema:
      type: object
      required: [order, sku, qty]
      properties:
        qty: {type: integer, maximum: 10}
"""


def order_event(**data: Any) -> CloudEvent:
    payload: dict[str, Any] = {
        "order_id": "ord-1",
        "customer": "cus-9",
        "items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}, {"sku": "C", "qty": 5}],
    }
    payload.update(data)
    return CloudEvent.create("shop.order.paid", "/shop", payload, id="evt-1")


def summary(events: list[CloudEvent]) -> list[tuple[Any, ...]]:
    return [(e.id, e.subject, e.partitionkey, routed_topic(e), e.data) for e in events]


@pytest.mark.parametrize("fuse", [True, False])
def test_chain_from_yaml_runs_every_step(fuse: bool) -> None:
    chain = Chain(yaml.safe_load(CHAIN_YAML), fuse=fuse)
    assert len(chain) == 6
    out = chain.process(order_event())
    assert summary(out) == [
        ("evt-1:0", "A", "cus-9", "orders.a", {"order": "ord-1", "sku": "A", "qty": 2}),
        ("evt-1:1", "C", "cus-9", "orders.c", {"order": "ord-1", "sku": "C", "qty": 5}),
    ]


def test_chain_plan_fuses_the_runs_that_pay() -> None:
    config = [
        {"jq": ".items | map(.)"},
        {"jq": ".[]"},
        {"filter": ".data.qty > 1"},
        {"filter": '.data.sku | test("^[AC]$")'},
        {"filter": ".data.qty | tostring | length < 3"},
        {"route": '"orders." + (.data.sku | ascii_downcase)'},
        {"validate": {"schema": {"type": "object"}}},
    ]
    chain = Chain(config)
    # The filters read only .data: they join the data run (on data, one engine
    # call); the route reads the event form and runs on its own.
    assert chain.describe() == [
        "steps[0].jq+steps[1].jq+steps[2].filter+steps[3].filter+steps[4].filter",
        "steps[5].route",
        "steps[6].validate",
    ]
    assert len(Chain(config, fuse=False).describe()) == 7
    assert summary(chain.process(order_event())) == summary(
        Chain(config, fuse=False).process(order_event())
    )
    assert [routed_topic(e) for e in chain.process(order_event())] == ["orders.a", "orders.c"]


def test_single_output_keeps_its_id() -> None:
    chain = Chain([{"jq": ".items[]"}, {"filter": '.data.sku == "B"'}])
    [out] = chain.process(order_event())
    assert out.id == "evt-1"  # the chain's only output for this event


def test_all_problems_at_once_with_paths() -> None:
    config = [
        {"jq": ".a |||"},
        {"filter": {"expression": ".x", "engine": "gojq"}},
        {"set": {"Bad": ".x", "subject": ".a"}},
        {"nosuchstep": {}},
        "jq: .a",
        {"jq": ".a", "filter": ".b"},
        {"validate": {"schema": {"type": 5}}},
        {"drop_fields": ["ok", "a..b"]},
        {"jq": {"program": "$__loc__"}},
        {"route": {"expression": ".x", "default": "bad topic"}},
        {"jq": {"program": ".", "aply_to": "event"}},
    ]
    with pytest.raises(ConfigError) as info:
        Chain(config, source="pipeline.yaml")
    problems = info.value.problems
    paths = [p for p, _ in problems]
    assert paths == [
        "steps[0].jq",
        "steps[1].filter.engine",
        "steps[2].set.Bad",
        "steps[3]",
        "steps[4]",
        "steps[5]",
        "steps[6].validate.schema",
        "steps[7].drop_fields[1]",
        "steps[8].jq.program",
        "steps[9].route.default",
        "steps[10].jq.aply_to",
    ]
    msgs = dict(problems)
    assert "not a valid jq program" in msgs["steps[0].jq"]
    assert "unknown step 'nosuchstep'" in msgs["steps[3]"] and "jq" in msgs["steps[3]"]
    assert "engine: jq" in msgs["steps[8].jq.program"]
    assert "did you mean 'apply_to'?" in msgs["steps[10].jq.aply_to"]
    text = str(info.value)
    assert text.startswith("11 configuration problem(s) in pipeline.yaml:")
    assert "  steps[0].jq: not a valid jq program" in text


def test_not_a_list() -> None:
    with pytest.raises(ConfigError) as info:
        Chain({"jq": "."})  # type: ignore[arg-type]
    assert info.value.problems == [("steps", "must be a list of steps")]


def test_empty_chain_passes_events_through() -> None:
    event = order_event()
    assert Chain([]).process(event) == [event]


def test_bad_programs_fail_at_load_not_at_first_event() -> None:
    with pytest.raises(ConfigError):
        Chain([{"filter": ".a == "}])
    # ... and a chain that loaded runs its first event without compiling anything.
    chain = Chain([{"filter": '.data.order_id == "ord-1"'}])
    assert chain.process(order_event())


def test_errors_name_the_failing_step_fused_or_not() -> None:
    config = [
        {"jq": ".items"},
        {"filter": "true"},
        {"jq": ".[] | .qty.x"},
        {"validate": {"schema": {}}},
    ]
    for fuse in (True, False):
        with pytest.raises(TransformError) as info:
            Chain(config, fuse=fuse).process(order_event())
        assert info.value.step == "steps[2].jq"
        assert str(info.value).startswith("steps[2].jq: jq program failed")


def test_schema_violation_names_the_validate_step() -> None:
    chain = Chain(
        [
            {"jq": "{qty: .items[0].qty}"},
            {"validate": {"schema": {"properties": {"qty": {"type": "string"}}}}},
        ]
    )
    with pytest.raises(SchemaValidationError) as info:
        chain.process(order_event())
    assert info.value.step == "steps[1].validate"
    assert info.value.violations[0].path == "$.qty"


def test_batch_isolates_failures() -> None:
    chain = Chain([{"jq": ".items[] | select(.qty > 1) | .sku"}])
    events = [order_event(), order_event(items=5), order_event(items=[])]
    result = chain.run_batch(events)
    assert [[e.data for e in outs] for outs in result.outputs] == [["A", "C"], [], []]
    assert list(result.failed) == [1]
    assert isinstance(result.failed[1], TransformError)
    with pytest.raises(ChainBatchError) as info:
        chain.process_batch(events)
    assert isinstance(info.value, BatchError)
    assert list(info.value.failed) == [1]
    assert len(info.value.outputs[0]) == 2
    assert chain.process_batch([order_event()])[0][1].data == "C"


class _UpperConfig(PluginConfig):
    field: str = "sku"


class _Upper(Step):
    """A step from another package: built with (config, name=) and run via process()."""

    type_name = "test_upper"
    Config = _UpperConfig

    def process(self, event: CloudEvent) -> list[CloudEvent]:
        field = self.config.field  # type: ignore[attr-defined]
        return [event.replace(data={**event.data, field: event.data[field].upper()})]


UPPER = Plugin("step", "test_upper", _UpperConfig, _Upper.build, "upper-cases a field")


def test_chain_runs_steps_of_other_packages() -> None:
    catalog = {**STEPS, "test_upper": UPPER}  # a catalog with one more step
    chain = Chain(
        [{"jq": ".items[0]"}, {"test_upper": None}, {"filter": '.data.sku == "A"'}],
        catalog=catalog,
    )
    assert chain.describe() == ["steps[0].jq", "steps[1].test_upper", "steps[2].filter"]
    [out] = chain.process(order_event(items=[{"sku": "a", "qty": 1}]))
    assert out.data == {"sku": "A", "qty": 1}
    with pytest.raises(ConfigError) as info:
        Chain([{"test_upper": {"nope": 1}}, {"test_upper": "x"}], catalog=catalog)
    assert [p for p, _ in info.value.problems] == [
        "steps[0].test_upper.nope",
        "steps[1].test_upper",
    ]
    with pytest.raises(ConfigError, match="unknown step 'test_upper'"):
        Chain([{"test_upper": None}])  # the built-in catalog is not changed by it


def test_resolver_reaches_validate_steps() -> None:
    calls = []

    def resolve(subject: str, version: Any) -> tuple[str, str]:
        calls.append((subject, version))
        return "JSON", '{"type": "object", "required": ["sku"]}'

    chain = Chain([{"jq": ".items[0]"}, {"validate": "orders-value"}], resolve_schema=resolve)
    assert calls == [("orders-value", "latest")]
    assert chain.process(order_event())[0].data["sku"] == "A"
    with pytest.raises(SchemaValidationError):
        chain.process(order_event(items=[{"qty": 1}]))


def test_yaml_pipeline_with_an_undefined_variable_is_a_config_error() -> None:
    steps_cfg = yaml.safe_load(PIPELINE_YAML)["steps"]
    with pytest.raises(ConfigError) as info:
        Chain(steps_cfg)
    assert "undefined variable `$__order`" in info.value.problems[0][1]
