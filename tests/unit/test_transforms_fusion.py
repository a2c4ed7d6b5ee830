"""Fusion: a chain with neighbouring jq steps fused must behave exactly as unfused.

Same outputs (every attribute, extension and data, in order, with the same ids),
and the same errors (class, step and message) -- on both engines, for events
that pass, fan out, drop, fail, carry binary or no data.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from eventpipe.envelope import CloudEvent
from eventpipe.transforms import Chain, StepError
from eventpipe.transforms import fusion as fusion_module
from eventpipe.transforms.fusion import FusedRunner, StepRunner
from tests.unit.test_transforms_conformance import cross_engine  # noqa: F401

pytestmark = pytest.mark.usefixtures("cross_engine")

# (chain, fused runners planned).
CHAINS: list[tuple[list[dict[str, Any]], int]] = [
    ([{"jq": ".items[]"}, {"jq": "{sku, q: .qty}"}], 1),
    ([{"jq": ".items[]"}, {"jq": "select(.qty > 1)"}, {"jq": ".sku"}], 1),
    # a data step then an event-form filter: measured slower fused, so not fused
    ([{"jq": ".items[]"}, {"filter": '.data.qty > 1 and .type != ""'}], 0),
    # ... unless the filter reads only .data: then it runs on data, fused
    ([{"jq": ".items[]"}, {"filter": ".data.qty | . > 1"}], 1),
    ([{"jq": ".items[]"}, {"filter": ".data.qty > 1"}, {"jq": ".sku"}], 1),
    ([{"jq": ".items[]?"}, {"filter": '.data.sku == "A" or .data["qty"] >= 3'}], 1),
    ([{"jq": ".items"}, {"filter": ".data[0].qty // 0 > 1"}, {"filter": ".data | length"}], 1),
    ([{"filter": '.data.status == "paid"'}, {"jq": ".items[]"}, {"filter": ".data.qty > 1"}], 1),
    # a leading filter that reads more than .data keeps the run on the event form
    ([{"filter": '.type == "shop.order.paid"'}, {"jq": ".items[]"}, {"filter": ".data.qty"}], 1),
    ([{"set": {"subject": ".data.status"}}, {"jq": ".items[]"}, {"filter": ".data.qty > 2"}], 1),
    ([{"set": {"datacontenttype": '"text/plain"'}}, {"jq": "."}, {"filter": ".data"}], 1),
    # filters, then at most one set / route, then data steps
    ([{"filter": '.type | startswith("shop.")'}, {"jq": ".items | length"}], 1),
    ([{"filter": '.data.status == "paid"'}, {"jq": ".items[]"}, {"jq": ".sku"}], 1),
    (
        [
            {"filter": '.type | startswith("shop.")'},
            {"route": {"expression": '"orders." + .data.status', "default": "orders.none"}},
            {"jq": ".items[]"},  # fans out after the route: ids made distinct
            {"jq": "{sku, n: .qty}"},
        ],
        1,
    ),
    ([{"set": {"subject": ".data.status"}}, {"jq": ".items[] | .qty.x"}], 1),  # jq fails
    ([{"set": {"subject": ".data.items | length"}}, {"jq": ".items[]"}], 1),  # set fails
    ([{"route": ".data.status | tostring"}, {"jq": "[.items[]?.sku]"}], 1),
    ([{"filter": ".data | .x"}, {"jq": "."}], 1),  # the filter fails on non-objects
    # set makes data not JSON: the data step after it rejects the event
    ([{"set": {"datacontenttype": '"text/plain"'}}, {"jq": "."}], 1),
    ([{"set": {"datacontenttype": '"application/vnd.x+json"'}}, {"jq": "keys"}], 1),
    ([{"filter": "true"}, {"jq": ".items"}, {"filter": ".data | length > 1"}], 1),
    (
        [
            {"filter": '.type | startswith("shop.")'},
            {"filter": ".data.items | length > 0"},
            {"set": {"subject": ".data.items[0].sku", "partitionkey": ".data.items | length"}},
        ],
        1,
    ),
    (
        [
            {"filter": '.data.status | . == "paid" or . == "open"'},
            {"filter": ".id | length > 0"},
            {
                "route": {
                    "expression": '"orders." + (.data.status | ascii_upcase)',
                    "default": "orders.none",
                }
            },
        ],
        1,
    ),
    # simple expressions
    (
        [
            {"filter": '.data.status == "paid"'},
            {"filter": '.id != ""'},
            {"route": {"expression": '"orders." + .data.status', "default": "orders.none"}},
        ],
        1,
    ),
    ([{"jq": ".items[]"}, {"jq": "empty"}, {"filter": "true | not | not"}], 1),
    ([{"jq": "null"}, {"jq": "[.]"}, {"filter": 'has("data") and (.data | length) == 1'}], 1),
    # `data` is in the event's JSON form even when null
    (
        [{"filter": '(.data | type) == "null" or has("data")'}, {"set": {"k": "keys | length"}}],
        1,
    ),
    ([{"jq": ".items[] | .qty.x"}, {"jq": "."}], 1),  # fails at run time
    ([{"filter": "(false, true)"}, {"filter": "(true, false)"}], 1),
    (
        [
            {"jq": "def each: .items[]; each # a trailing comment"},
            {"jq": ".qty # another"},
            {"filter": "(.data > 0) # and one"},
        ],
        1,
    ),
    # set ends an event run: the filter after it starts the next one
    (
        [
            {"set": {"subject": '"s" | ascii_upcase'}},
            {"filter": '.subject | . == "S"'},
            {"filter": "[.data] | length == 1"},
        ],
        1,
    ),
    ([{"filter": ".id | length > 0"}, {"set": {"id": ".data.status | tostring"}}], 1),
    ([{"filter": ".id | length > 0"}, {"set": {"subject": ".data.items | length"}}], 1),
    ([{"filter": ".id | length > 0"}, {"route": ".data.status | tostring"}], 1),
    # a set / route that reads only .data runs on data: after data steps too
    ([{"jq": ".items[0] // {}"}, {"set": {"subject": ".data.sku"}}], 1),
    ([{"jq": ".items[]"}, {"filter": ".data.qty > 1"}, {"set": {"subject": ".data.sku"}}], 1),
    (
        [
            {"jq": ".items[]"},
            {"set": {"subject": ".data.sku", "partitionkey": ".data.qty"}},
            {"jq": "{sku, n: .qty}"},
            {"filter": ".data.n > 1"},
        ],
        1,
    ),
    ([{"jq": ".items[]"}, {"route": {"expression": '"o." + .data.sku'}}, {"jq": ".qty"}], 1),
    ([{"jq": ".items[]"}, {"set": {"subject": ".data.qty"}}, {"jq": "."}], 1),  # set fails
    ([{"jq": ".items"}, {"set": {"datacontenttype": '"text/plain"'}}, {"jq": "."}], 1),
    ([{"jq": ".items"}, {"set": {"datacontenttype": ".data | length | tostring"}}], 1),
    ([{"filter": ".data.status"}, {"set": {"subject": ".data.status"}}, {"jq": ".items"}], 1),
    ([{"set": {"subject": '.data.status + "!"'}}, {"jq": ".items[]"}, {"jq": ".sku"}], 1),
    # a second set / route starts a new run; one reading more than .data starts one too
    (
        [
            {"jq": ".items[]"},
            {"set": {"subject": ".data.sku"}},
            {"route": '"o." + .data.sku'},
            {"jq": ".qty"},
        ],
        2,
    ),
    ([{"jq": ".items[]"}, {"set": {"subject": ".id"}}, {"jq": ".qty"}], 1),
    # not fusable: apply_to event, other kinds between
    ([{"jq": {"program": ".", "apply_to": "event"}}, {"filter": "true | not"}], 0),
    ([{"jq": ".items"}, {"drop_fields": "x"}, {"jq": "."}], 0),
]

DATA: dict[str, Any] = {
    "status": "paid",
    "items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}, {"sku": "C", "qty": 3}],
}


def events() -> list[CloudEvent]:
    base = CloudEvent.create("shop.order.paid", "/shop", DATA, id="e1", partitionkey="k")
    return [
        base,
        base.replace(data={"status": "open", "items": []}),
        base.replace(data={"status": "paid", "items": [{"sku": "A", "qty": {"x": 1}}]}),
        base.replace(data=None, datacontenttype=None),
        base.replace(data=b"\x00\x01", datacontenttype="application/octet-stream"),
        base.replace(data="plain text", datacontenttype="text/plain"),
        base.replace(data=[1, 2], type="shop.other"),
    ]


def with_engine(config: list[dict[str, Any]], engine: str) -> list[dict[str, Any]]:
    out = []
    for item in config:
        ((kind, raw),) = item.items()
        if kind in ("jq", "filter", "route"):
            main = "program" if kind == "jq" else "expression"
            raw = (
                {**raw, "engine": engine}
                if isinstance(raw, dict)
                else {main: raw, "engine": engine}
            )
        elif kind == "set":
            raw = {"fields": raw, "engine": engine}
        out.append({kind: raw})
    return out


def outcome(chain: Chain, event: CloudEvent) -> tuple[str, Any]:
    try:
        outs = chain.process(event)
    except StepError as exc:
        return "error", (type(exc), exc.step, str(exc))
    return "ok", [(e.attributes(), e.data) for e in outs]


@pytest.mark.parametrize("engine", ["jaq", "jq"])
@pytest.mark.parametrize(("config", "fused_runners"), CHAINS, ids=[str(c[0]) for c in CHAINS])
def test_fused_equals_unfused(
    engine: str,
    config: list[dict[str, Any]],
    fused_runners: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = with_engine(config, engine)
    fused, plain = Chain(cfg), Chain(cfg, fuse=False)
    assert sum(isinstance(r, FusedRunner) for r in fused.runners) == fused_runners
    assert all(isinstance(r, StepRunner) for r in plain.runners)
    with caplog.at_level(logging.WARNING, logger="eventpipe.transforms.fusion"):
        for event in events():
            want = outcome(plain, event)
            assert outcome(fused, event) == want, f"{event!r} ({event.data!r})"
    assert not caplog.records  # never a fused failure the unfused steps did not share


@pytest.mark.parametrize("engine", ["jaq", "jq"])
def test_batches_fused_equal_unfused(engine: str) -> None:
    """run_batch: the same outputs per event, and the same events failing with the
    same errors, fused or not."""

    batch = events() * 2

    def summary(chain: Chain) -> tuple[list[Any], dict[int, Any]]:
        result = chain.run_batch(batch)
        outputs = [[(e.attributes(), e.data) for e in outs] for outs in result.outputs]
        failed = {n: (type(e), getattr(e, "step", None), str(e)) for n, e in result.failed.items()}
        return outputs, failed

    for config, _ in CHAINS:
        cfg = with_engine(config, engine)
        assert summary(Chain(cfg)) == summary(Chain(cfg, fuse=False)), config


def test_fusion_corpus_covers_fan_out_drop_and_errors() -> None:
    seen: set[str] = set()
    for config, _ in CHAINS:
        chain = Chain(config)
        for event in events():
            kind, value = outcome(chain, event)
            seen.add("error" if kind == "error" else {0: "drop", 1: "one"}.get(len(value), "many"))
    assert seen == {"error", "drop", "one", "many"}


def test_fused_program_runs_once_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = Chain(
        [
            {"filter": ".data.items | length > 1"},
            {"filter": '.type | startswith("shop.")'},
            {"set": {"subject": ".data.items | length | tostring"}},
        ],
    )
    [runner] = chain.runners
    assert isinstance(runner, FusedRunner)
    calls: list[int] = []
    monkeypatch.setattr(fusion_module, "run_unfused", lambda *a: calls.append(1) or [])
    [out] = chain.process(events()[0])
    assert out.subject == "3"
    assert calls == []  # the unfused steps were not needed


def test_failure_reruns_unfused_for_the_exact_error() -> None:
    chain = Chain([{"filter": ".id | length > 0"}, {"filter": ".data.items | .x"}])
    assert isinstance(chain.runners[0], FusedRunner)
    with pytest.raises(StepError) as info:
        chain.process(events()[0])
    assert info.value.step == "steps[1].filter"
    assert str(info.value).startswith("steps[1].filter: jq program failed")


def test_simple_expressions_run_on_the_engine_and_fuse() -> None:
    config = [{"jq": "{a: .x}"}, {"jq": ".b"}, {"filter": '.type == "x"'}, {"filter": ".data"}]
    chain = Chain(config)
    assert chain.describe() == ["steps[0].jq+steps[1].jq", "steps[2].filter+steps[3].filter"]


def test_fused_sources() -> None:
    data = Chain([{"jq": ".a"}, {"jq": ".b"}]).runners[0]
    assert isinstance(data, FusedRunner)
    assert data.source == "(\n.a\n) | (\n.b\n)"
    event = Chain([{"filter": ".a | length > 0"}, {"route": ".b | tostring"}])
    event = event.runners[0]
    assert isinstance(event, FusedRunner)
    assert event.source == (
        "select(first(\n.a | length > 0\n)) | (\n[[first(\n.b | tostring\n)]]\n)"
    )
    only = Chain([{"filter": ".a | length > 0"}, {"filter": ".b | length > 0"}])
    only = only.runners[0]
    assert isinstance(only, FusedRunner) and only.source.endswith(" | true")
    then_data = Chain([{"filter": ".a"}, {"jq": ".b"}, {"jq": ".c"}]).runners[0]
    assert isinstance(then_data, FusedRunner)
    assert then_data.source == "select(first(\n.a\n)) | .data | (\n.b\n) | (\n.c\n)"
    data_filter = Chain([{"jq": ".b"}, {"filter": ".data.c > 1"}, {"jq": ".d"}]).runners[0]
    assert isinstance(data_filter, FusedRunner)
    assert data_filter.source == ("(\n.b\n) | (\nselect(first(\n.c > 1\n))\n) | (\n.d\n)")
    leading = Chain([{"filter": ".data.a"}, {"jq": ".b"}]).runners[0]
    assert isinstance(leading, FusedRunner)
    assert leading.source == "(\nselect(first(\n.a\n))\n) | (\n.b\n)"
    set_data = Chain([{"set": {"subject": ".a"}}, {"jq": ".b"}]).runners[0]
    assert isinstance(set_data, FusedRunner)
    assert set_data.source == "[(\n[[first(\n.a\n)]]\n), [.data | (\n.b\n)]]"


# A set / route reading only .data, on data: `A | [(V'), [B]]` (B is `.` when none).
ON_DATA_SOURCES: list[tuple[list[dict[str, Any]], str]] = [
    (
        [{"jq": ".b"}, {"set": {"subject": ".data.a"}}, {"jq": ".d"}],
        "(\n.b\n) | [(\n[[first(\n.a\n)]]\n), [(\n.d\n)]]",
    ),
    ([{"jq": ".b"}, {"route": ".data.t"}], "(\n.b\n) | [(\n[[first(\n.t\n)]]\n), [.]]"),
    ([{"set": {"subject": ".data.a"}}, {"jq": ".b"}], "[(\n[[first(\n.a\n)]]\n), [(\n.b\n)]]"),
]


@pytest.mark.parametrize(("config", "source"), ON_DATA_SOURCES)
def test_fused_sources_with_a_set_on_data(config: list[dict[str, Any]], source: str) -> None:
    runners = Chain(config).runners
    assert len(runners) == 1 and isinstance(runners[0], FusedRunner)
    assert runners[0].source == source


def test_fused_runner_rejects_bad_groups() -> None:
    a, b, c = Chain(
        [{"jq": ".a"}, {"set": {"subject": ".x | tostring"}}, {"filter": ".x | length > 0"}],
        fuse=False,
    ).steps
    pa, pb, pc = a.fusable(), b.fusable(), c.fusable()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="then at most one set / route, then data steps"):
        FusedRunner([(b, pb), (c, pc)])
    with pytest.raises(ValueError, match="then at most one set / route, then data steps"):
        FusedRunner([(a, pa), (c, pc)])
    with pytest.raises(ValueError, match="then at most one set / route, then data steps"):
        FusedRunner([(b, pb), (b, pb)])
    with pytest.raises(ValueError, match="two or more"):
        FusedRunner([(a, pa)])
