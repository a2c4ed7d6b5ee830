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
from eventpipe.transforms.fusion import FusedRunner, StepRunner, fused_source
from tests.unit.test_transforms_conformance import cross_engine  # noqa: F401

pytestmark = pytest.mark.usefixtures("cross_engine")

# (chain, how many fused runners it must plan)
CHAINS: list[tuple[list[dict[str, Any]], int]] = [
    ([{"jq": ".items[]"}, {"jq": "{sku, q: .qty}"}], 1),
    ([{"jq": ".items[]"}, {"filter": ".data.qty > 1"}], 1),
    ([{"filter": '.type == "shop.order.paid"'}, {"jq": ".items | length"}], 1),
    (
        [
            {"jq": ".items[]"},
            {"filter": ".data.qty > 1"},
            {"set": {"subject": ".data.sku", "partitionkey": ".data.qty"}},
        ],
        1,
    ),
    (
        [
            {"filter": '.data.status == "paid"'},
            {"filter": '.id != ""'},
            {"route": {"expression": '"orders." + .data.status', "default": "orders.none"}},
        ],
        1,
    ),
    ([{"jq": ".items[]"}, {"jq": "empty"}, {"filter": "true"}], 1),
    (
        [
            {"jq": ".items[] | .qty"},
            {"filter": ". == null | not"},
            {"set": {"subject": ".data | tostring", "qtyx": ".data * 10"}},
        ],
        1,
    ),
    # `data` is present in the event's JSON form even when null
    ([{"jq": "null"}, {"filter": 'has("data")'}, {"set": {"isnull": ".data == null"}}], 1),
    ([{"jq": ".items[] | .qty.x"}, {"filter": "true"}], 1),  # fails at run time
    ([{"filter": "false, true"}, {"jq": "."}], 1),
    (
        [
            {"jq": "def each: .items[]; each # a trailing comment"},
            {"filter": ".data.qty > 0 # another"},
        ],
        1,
    ),
    # set ends a fused group: the filter after it starts the next one
    ([{"set": {"subject": '"s"'}}, {"filter": '.subject == "s"'}, {"jq": ".items[0]"}], 1),
    ([{"jq": ".items[]"}, {"set": {"id": ".data.sku"}}], 1),  # set id: outputs get new ids
    ([{"jq": ".items[]"}, {"set": {"subject": ".data.qty"}}], 1),  # set fails: not a string
    ([{"jq": ".items[]"}, {"route": ".data.sku"}, {"filter": "true"}], 1),
    # not fusable: apply_to event, or another engine
    ([{"jq": {"program": ".", "apply_to": "event"}}, {"filter": "true"}], 0),
    ([{"jq": ".items"}, {"drop_fields": "x"}, {"filter": "true"}], 0),
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
            raw = {**raw, "engine": engine} if isinstance(raw, dict) else {main: raw, "engine": engine}
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
@pytest.mark.parametrize(("config", "fused_runners"), CHAINS, ids=[str(c) for c, _ in CHAINS])
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
    kinds = set()
    with caplog.at_level(logging.WARNING, logger="eventpipe.transforms.fusion"):
        for event in events():
            got, want = outcome(fused, event), outcome(plain, event)
            assert got == want, f"{event!r} ({event.data!r})"
            kinds.add(got[0])
    assert not caplog.records  # never a fused failure the unfused steps did not share


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
        [{"jq": ".items[]"}, {"filter": ".data.qty > 1"}, {"set": {"subject": ".data.sku"}}]
    )
    [runner] = chain.runners
    assert isinstance(runner, FusedRunner)
    calls: list[int] = []
    monkeypatch.setattr(fusion_module, "run_unfused", lambda *a: calls.append(1) or [])
    outs = chain.process(events()[0])
    assert [o.subject for o in outs] == ["A", "C"]
    assert calls == []  # the unfused steps were not needed


def test_failure_reruns_unfused_for_the_exact_error(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = Chain([{"jq": ".items[]"}, {"filter": ".data.qty.x"}, {"jq": "."}])
    with pytest.raises(StepError) as info:
        chain.process(events()[0])
    assert info.value.step == "steps[1].filter"


def test_data_only_group_runs_on_data() -> None:
    parts = [p for s in Chain([{"jq": ".a"}, {"jq": ".b"}]).steps if (p := s.fusable())]  # type: ignore[attr-defined]
    assert fused_source(parts) == "(\n.a\n) | (\n.b\n)"
    mixed = [p for s in Chain([{"jq": ".a"}, {"filter": ".b"}]).steps if (p := s.fusable())]  # type: ignore[attr-defined]
    src = fused_source(mixed)
    assert src.startswith("(.data | (\n.a\n)) as $__eventpipe_data")
    assert src.endswith("select(first(\n.b\n)) | .data")


def test_fused_runner_rejects_bad_groups() -> None:
    a, b = Chain([{"jq": ".a"}, {"set": {"subject": ".x"}}], fuse=False).steps
    pa, pb = a.fusable(), b.fusable()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="only end"):
        FusedRunner([(b, pb), (a, pa)])
    with pytest.raises(ValueError, match="two or more"):
        FusedRunner([(a, pa)])
