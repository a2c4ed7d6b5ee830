"""Engine conformance: jaq (default) and libjq (reference) must agree.

Two nets:

* ``CORPUS`` -- one list of jq programs with inputs, run on both engines;
* the ``cross_engine`` fixture -- every other transforms test module uses it
  (``pytestmark``): it records every program run during a test, with its input
  and outcome, in ``RUNS``, and after the test re-runs each on the other engine
  and requires the same outputs (or an error on both).  So every program any
  transforms test runs is checked on both engines, not only the ones listed here.

Outputs compare as JSON values: ``1 == 1.0`` (libjq has only doubles and hands
back integral ones as ``int``), but ``true != 1``; objects compare as JSON
objects, without key order (jaq's ``del`` swap-removes, so the last key takes the
deleted one's place; libjq keeps the order).  Error messages differ by engine;
only "it failed" must agree.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from eventpipe.transforms.errors import StepError
from eventpipe.transforms.jq_engine import (
    NO_OUTPUT,
    JaqProgram,
    JqCompileError,
    LibjqProgram,
    Program,
    compile_program,
)

ORDER: dict[str, Any] = {
    "order_id": "ord-000123",
    "customer": {"id": "cus-42", "name": "Ada Lovelace", "email": "ada@example.com"},
    "items": [
        {"sku": "A-1", "qty": 2, "price": 19.5},
        {"sku": "B-2", "qty": 1, "price": 5.25},
        {"sku": "C-3", "qty": 4, "price": 1.0},
    ],
    "total": 48.0,
    "status": "paid",
    "tags": ["new", "gift"],
    "note": None,
}

# (program, input): every construct the transforms tests lean on, plus edge cases.
CORPUS: list[tuple[str, Any]] = [
    (".", ORDER),
    (".order_id", ORDER),
    (".missing", ORDER),
    (".customer.id", ORDER),
    (".items[]", ORDER),
    (".items[] | .sku", ORDER),
    (".items | length", ORDER),
    (".items | map(.qty * .price) | add", ORDER),
    ("[.items[] | select(.qty > 1) | .sku]", ORDER),
    ("{id: .order_id, customer: .customer.id, n: (.items | length)}", ORDER),
    ("{order_id, status}", ORDER),
    ("del(.customer.email, .note)", ORDER),
    ("del(.a)", {"a": 1, "b": 2, "c": 3}),  # jaq: {"c", "b"}; libjq: {"b", "c"}
    (".customer |= {id}", ORDER),
    (".total > 10", ORDER),
    ('.status == "paid" and .total > 0', ORDER),
    ('.note // "none"', ORDER),
    ('if .total > 40 then "big" else "small" end', ORDER),
    ("empty", ORDER),
    ('.items[] | select(.sku == "nope")', ORDER),
    ('(.tags | join(",")), (.tags | length)', ORDER),
    ("[.tags[] | ascii_upcase]", ORDER),
    ('"orders." + (.customer.id | ascii_downcase)', ORDER),
    (".items | sort_by(.price) | map(.sku)", ORDER),
    ("to_entries | map(.key)", ORDER),
    ("keys", ORDER),
    ("[paths | length] | max", ORDER),
    ("reduce .items[] as $i (0; . + $i.qty)", ORDER),
    ("[limit(2; .items[])] | length", ORDER),
    ("[first(.items[]), first(empty)]", ORDER),
    ("[.[] | type]", [1, "a", None, True, [1], {"a": 1}, 1.5]),
    ("map(tostring)", [1, "a", None, True, 2.5]),
    (".[] | tojson", [{"a": [1, 2]}, "x"]),
    ("tostring", {"b": 1, "a": [True, None]}),
    ('"\\(.a)-\\(.b)"', {"a": 1, "b": "x"}),
    ("@base64", "hello"),
    ('split("-")', "a-b-c"),
    ('test("^ord-[0-9]+$")', "ord-12"),
    ('sub("a"; "b")', "banana"),
    ("ascii_downcase", "MiXeD"),
    ("tonumber", "42"),
    ("floor", 2.7),
    (". / 2", 5),
    ("[1, 2.5, 3] | add", None),
    (".a + .b", {"a": [1], "b": [2]}),
    (". * {b: {c: 2}}", {"a": 1, "b": {"d": 3}}),
    ("[.[] | . > 1]", [0, 1, 2, "a", None]),
    ("sort", [3, "b", None, True, [1], {"a": 1}, 1.5, False]),
    ("unique", [1, 2, 1, "a", "a"]),
    ("group_by(.k) | map(length)", [{"k": 1}, {"k": 2}, {"k": 1}]),
    ("with_entries(.value += 1)", {"a": 1, "b": 2}),
    ('walk(if type == "number" then . + 1 else . end)', {"a": [1, {"b": 2}]}),
    ('setpath(["data"]; 1)', {"data": None, "id": "x"}),
    ('getpath(["a", "b"])', {"a": {"b": 3}}),
    ('has("a")', {"a": None}),
    ("any(.[]; . > 2)", [1, 2, 3]),
    ("all(.[]; . > 0)", [1, 2, 3]),
    ("range(3)", None),
    ("[range(0; 10; 3)]", None),
    (".[-1]", [1, 2, 3]),
    (".[1:]", [1, 2, 3]),
    ('try error("boom") catch .', None),
    (".a?", 5),
    ("[.[]?]", 5),
    # errors: both engines must fail
    (".a", 5),
    (".a.b", {"a": "x"}),
    ('error("boom")', None),
    ('1 + "a"', None),
    (".[] | tonumber", ["1", "x"]),
    ("keys", 5),
]


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: numbers by value (1 == 1.0), booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def outcome(program: Program, method: str, value: Any) -> tuple[str, Any]:
    try:
        return "ok", getattr(program, method)(copy.deepcopy(value))
    except StepError:
        return "error", None


def compare(source: str, method: str, value: Any) -> tuple[tuple[str, Any], tuple[str, Any]]:
    return (
        outcome(compile_program(source, "jaq"), method, value),
        outcome(compile_program(source, "jq"), method, value),
    )


def same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "error":
        return True
    if a[1] is NO_OUTPUT or b[1] is NO_OUTPUT:
        return a[1] is b[1]
    return json_equal(a[1], b[1])


@pytest.mark.parametrize(("program", "value"), CORPUS, ids=[p for p, _ in CORPUS])
def test_corpus_same_on_both_engines(program: str, value: Any) -> None:
    for method in ("all", "first"):
        jaq_out, jq_out = compare(program, method, value)
        assert same(jaq_out, jq_out), f"{method}: jaq {jaq_out} != libjq {jq_out}"


def test_corpus_has_errors_outputs_and_empties() -> None:
    kinds = {compare(p, "all", v)[0][0] for p, v in CORPUS}
    sizes = {len(r[1]) for p, v in CORPUS if (r := compare(p, "all", v)[0])[0] == "ok"}
    assert kinds == {"ok", "error"}
    assert {0, 1} <= sizes and max(sizes) > 1


def test_json_equal_is_strict_where_it_matters() -> None:
    assert json_equal({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not json_equal(True, 1)
    assert json_equal({"a": 1, "b": 2}, {"b": 2, "a": 1})  # JSON objects have no order
    assert not json_equal({"a": 1}, {"a": 1, "b": None})
    assert not json_equal([1], [1, 2])
    assert not json_equal("1", 1)


# ------------------------------------------------------- the cross-engine net
@dataclass
class Run:
    engine: str
    source: str
    method: str
    value: Any
    result: tuple[str, Any]


RUNS: list[Run] = []
"""Every program run by a transforms test (the one list); each re-checked on the other engine."""

_ORIGINAL = {
    (cls, m): getattr(cls, m) for cls in (JaqProgram, LibjqProgram) for m in ("all", "first")
}


@pytest.fixture(autouse=True)
def cross_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Run]]:
    runs: list[Run] = []

    def recorder(cls: type[Program], method: str) -> Any:
        original = _ORIGINAL[(cls, method)]

        def run(self: Program, value: Any) -> Any:
            snapshot = copy.deepcopy(value)
            try:
                out = original(self, value)
            except StepError:
                runs.append(Run(self.engine, self.source, method, snapshot, ("error", None)))
                raise
            runs.append(Run(self.engine, self.source, method, snapshot, ("ok", copy.deepcopy(out))))
            return out

        return run

    for cls, method in _ORIGINAL:
        monkeypatch.setattr(cls, method, recorder(cls, method))
    yield runs
    monkeypatch.undo()
    RUNS.extend(runs)
    compiled: dict[tuple[str, str], Program | None] = {}
    for run in runs:
        other = "jq" if run.engine == "jaq" else "jaq"
        key = (other, run.source)
        if key not in compiled:
            try:
                compiled[key] = compile_program(run.source, other)  # type: ignore[arg-type]
            except JqCompileError:
                compiled[key] = None  # engine-specific on purpose (see the engine tests)
        program = compiled[key]
        if program is None:
            continue
        theirs = outcome(program, run.method, run.value)
        assert same(run.result, theirs), (
            f"engines disagree on {run.source!r} ({run.method}) for input {run.value!r}: "
            f"{run.engine} gave {run.result}, {other} gave {theirs}"
        )


def test_cross_engine_net_catches_a_disagreement(cross_engine: list[Run]) -> None:
    program = compile_program(".a", "jaq")
    program.all({"a": 1})
    assert cross_engine[-1].source == ".a"
    # A fabricated disagreement is detected by the same comparison the net uses.
    theirs = outcome(compile_program(".a", "jq"), "all", {"a": 1})
    assert same(cross_engine[-1].result, theirs)
    assert not same(("ok", [1]), ("ok", [2]))
    assert not same(("ok", [1]), ("error", None))
