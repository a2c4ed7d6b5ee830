"""The native tier of the jaq engine (eventpipe/transforms/jq_native.py) against
jaq itself: for every program and input, the same outputs (types, key order and
all, compared as JSON text) or, where jaq fails, the same TransformError.  The
programs are written ones (the benchmarks', the fused forms eventpipe builds) and
generated ones over the whole subset, unparenthesised too, so precedence is
checked as well."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from eventpipe.transforms.errors import TransformError
from eventpipe.transforms.fusion import parenthesise
from eventpipe.transforms.jq_engine import NO_OUTPUT, JaqProgram, JqCompileError, compile_program
from eventpipe.transforms.jq_native import compile_native
from eventpipe.transforms.steps import values_source

ORDER = {
    "order_id": "ord-000123",
    "customer": {"id": "cus-42", "name": "Ada", "email": "ada@example.com", "tier": "gold"},
    "items": [{"sku": f"SKU-{i}", "qty": i % 3 + 1, "price": 12.5 + i} for i in range(3)],
    "currency": "EUR",
    "total": 123.45,
    "notes": "leave at the door",
}

INPUTS: list[Any] = [
    ORDER,
    {**ORDER, "total": 5, "customer": None, "items": []},
    {**ORDER, "customer": "cus-1", "items": {"x": {"sku": 1}}},
    {**ORDER, "items": [None, 1, "s", {"sku": True}]},
    {"a": {"b": [1, 2.5, -3]}, "b": "x", "c d": [True, False, None], "total": 2**60},
    {"a": 1, "b": 1.0, "total": float("1e308"), "items": [[1], {"a": 1}]},
    {"a": "é😀", "b": "", "total": -0.0, "items": "not a list"},
    {"a": [], "b": {}, "total": True},
    [1, "x", None, {"a": 2}],
    [],
    "text",
    "é😀",
    0,
    -7,
    3.25,
    2**62,
    True,
    False,
    None,
]

WRITTEN = [
    ".",
    ".order_id",
    ".customer.id",
    '."c d"',
    '.["a"].b',
    ".a.b[0]",
    ".a.b[-1]",
    ".[0]",
    ".[]",
    ".items[]",
    ".items[].sku",
    "[.items[] | {sku, qty, price}]",
    "{order_id, customer: .customer.id, tier: .customer.tier, email: .customer.email, "
    "total, items: [.items[] | {sku, qty, price}], notes}",
    ". + {big: (.total > 100), n_items: (.items | length)}",
    ".total > 10",
    ".total >= 123.45",
    ".total == 5",
    ".a == .b",
    '.a < "m"',
    ".a != null",
    "length",
    ".items | length",
    "type",
    ".a | type",
    "not",
    ".a | not",
    "select(.total > 10)",
    "select(first(.total > 10))",
    "first(.items[])",
    "first(empty)",
    "empty",
    ".a // .b",
    '.missing // "default"',
    "(.items[] | .qty) // 0",
    ".a and .b",
    ".a or .b",
    ".total + 1",
    ".total - 1.5",
    ".a + .b",
    ".b + .a",
    "{} + .",
    ". + null",
    "[.a, .b] + [1]",
    "1, 2, .a",
    "[.[]?]",
    'if .total > 100 then "big" elif .total > 10 then "mid" else "small" end',
    "if .a then .a else .b end",
    '{"a b": 1, "c"}',
    "{if: 1}",
    "{a: .a | length, b: (.b | type)}",
    "[.a, .b, (.total > 0)]",
    "-1",
    ".total - -1",
    "1e3",
    "[.a.b[] | . + 1]",
    ".a.[0]",
    "# a comment\n.a # more\n",
    "[1,2] | .[1]",
    '"\\u00e9" + .b',
]


def _bytes(o: Any) -> Any:
    if isinstance(o, bytes):
        return {"bytes": o.hex()}
    raise TypeError(type(o).__name__)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_bytes, option=orjson.OPT_NON_STR_KEYS)


def _run(program: JaqProgram, value: Any) -> tuple[str, Any]:
    try:
        return "ok", _dumps(program.all(value))
    except TransformError as exc:
        return "error", str(exc)


def _first(program: JaqProgram, value: Any) -> tuple[str, Any]:
    try:
        out = program.first(value)
    except TransformError as exc:
        return "error", str(exc)
    return "ok", "NO_OUTPUT" if out is NO_OUTPUT else _dumps(out)


def check_same(source: str, inputs: list[Any]) -> bool:
    """Native (with its fallback) and plain jaq agree on every input; True when
    the program has a native form."""
    native = JaqProgram(source)
    plain = JaqProgram(source, native=False)
    for value in inputs:
        assert _run(native, value) == _run(plain, value), (source, value)
        assert _first(native, value) == _first(plain, value), (source, value)
    return native.native is not None


@pytest.mark.parametrize("source", WRITTEN)
def test_written_programs_give_what_jaq_gives(source: str) -> None:
    check_same(source, INPUTS)


def test_most_written_programs_run_natively() -> None:
    native = [s for s in WRITTEN if compile_native(s) is not None]
    assert len(native) >= len(WRITTEN) - 2, sorted(set(WRITTEN) - set(native))


@pytest.mark.parametrize(
    "source",
    [
        ".a?",
        ".a[]?",
        ". as $x | $x",
        "reduce .[] as $x (0; . + $x)",
        '"\\(.a)"',
        ".a * 2",
        ".a / 2",
        "{(.k): 1}",
        "{$__loc__}",
        "if . then 1 end",
        "..",
        ".[1:2]",
        "map(.a)",
        "keys",
        "tostring",
        "1 < 2 < 3",
        "{a: .x > 1}",
        "{a: (1, 2)}",
        "(1, 2) + 1",
        "def f: .; f",
        "try .a catch 0",
        ".a = 1",
        "@base64",
        "# comment \\\n.a",
        "9007199254740993",
    ],
)
def test_programs_outside_the_subset_stay_on_jaq(source: str) -> None:
    assert compile_native(source) is None
    try:
        program = compile_program(source)
    except JqCompileError:
        return  # not a jaq program either
    assert isinstance(program, JaqProgram) and program.native is None


def test_the_programs_eventpipe_builds_run_natively() -> None:
    """The fused forms (fusion.py) and a set / sink values program, for the
    backfill benchmark's chain: the tier must take them, not just hand-written ones."""
    projection = (
        "{order_id, customer: .customer.id, tier: .customer.tier, email: .customer.email, "
        "total, items: [.items[] | {sku, qty, price}], notes}"
    )
    fused = " | ".join(
        [
            parenthesise(projection),
            f"select(first{parenthesise('.total > 10')})",
            f"[{parenthesise(values_source(['.order_id']))}, [.]]",
        ]
    )
    sink = values_source([".id", ".data.order_id", ".data.items", ".time"])
    merge = ". + {big: (.total > 100), n_items: (.items | length)}"
    for source in (projection, fused, sink, merge):
        assert check_same(source, INPUTS), source
    event_form = {"id": "e1", "time": "2026-01-01T00:00:00Z", "data": ORDER}
    check_same(sink, [event_form, {"id": None}, {"data": [1]}])


def test_a_fallback_gives_jaq_error_message() -> None:
    program = compile_program(".a.b")
    assert program.native is not None  # type: ignore[attr-defined]
    with pytest.raises(TransformError, match="cannot index"):
        program.all({"a": "text"})


# ------------------------------------------------------------ generated
LEAVES = [
    ".",
    ".a",
    ".b",
    ".a.b",
    '."c d"',
    ".[0]",
    ".[-1]",
    '.["a"]',
    "1",
    "2.5",
    "-3",
    '"x"',
    '"é"',
    "true",
    "false",
    "null",
    "[]",
    "{}",
    "length",
    "type",
    "not",
    "empty",
    ".total",
    ".items",
]
BINARY = ["|", ",", "//", "and", "or", "==", "!=", "<", "<=", ">", ">=", "+", "-"]


Gen = Callable[[], str]
FORMS: list[Callable[[random.Random, Gen], str]] = [
    lambda rng, sub: f"({sub()} {rng.choice(BINARY)} {sub()})",
    lambda rng, sub: f"[{sub()}]",
    lambda rng, sub: (
        "{"
        + ", ".join(
            k if rng.random() < 0.4 else f"{k}: ({sub()})"
            for k in rng.sample(["a", "b", '"c d"', "total", "items"], rng.randint(1, 3))
        )
        + "}"
    ),
    lambda rng, sub: f"select({sub()})",
    lambda rng, sub: f"first({sub()})",
    lambda rng, sub: f"if {sub()} then {sub()} else {sub()} end",
    lambda rng, sub: f"{rng.choice(['.items', '.a', '.', '.a.b'])}[] | {sub()}",
    lambda rng, sub: f"({sub()}) | {rng.choice(['.a', '.[0]', 'length', '.b.a'])}",
    lambda rng, sub: f"{sub()} | {sub()}",
    lambda rng, sub: f"{{a: {rng.choice(LEAVES)} | {rng.choice(['length', 'type', '.a', 'not'])}}}",
]


def _expr(rng: random.Random, depth: int) -> str:
    if depth <= 0 or rng.random() < 0.25:
        return rng.choice(LEAVES)
    pick = rng.randrange(len(FORMS) + 1)
    if pick == len(FORMS):  # unparenthesised chains: precedence
        parts = [rng.choice(LEAVES)]
        for _ in range(rng.randint(1, 3)):
            parts += [rng.choice(BINARY), rng.choice(LEAVES)]
        return " ".join(parts)
    return FORMS[pick](rng, lambda: _expr(rng, depth - 1))


def _value(rng: random.Random, depth: int) -> Any:
    pick = rng.randrange(12 if depth > 0 else 8)
    scalars: list[Any] = [None, True, False, 0, -4, 2.5, 2**55, "x", "é", "", 1e308]
    if pick < 7:
        return rng.choice(scalars)
    if pick == 7:
        return rng.choice([1, 2.0, -0.5, 10, 100.5])
    if pick < 10:
        keys = rng.sample(["a", "b", "c d", "total", "items"], rng.randint(0, 4))
        return {k: _value(rng, depth - 1) for k in keys}
    return [_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]


def test_generated_programs_give_what_jaq_gives() -> None:
    rng = random.Random(20261205)
    inputs = INPUTS + [_value(rng, 3) for _ in range(40)]
    tried = native = 0
    while tried < 1500:
        source = _expr(rng, 3)
        try:
            JaqProgram(source, native=False)
        except Exception:  # not a program jaq takes: nothing to compare
            continue
        tried += 1
        native += check_same(source, inputs)
    assert native > tried * 0.6, (native, tried)


def test_values_that_are_not_json_are_left_to_jaq() -> None:
    """jaq converts a tuple to an array and refuses an object it cannot convert;
    the tier hands such inputs to it rather than passing them through."""
    from datetime import UTC, datetime

    odd: list[Any] = [
        {"a": (1, 2)},
        {"a": {"b": [(3,)]}},
        {"a": {1: "x"}},
        {"a": datetime(2026, 1, 1, tzinfo=UTC)},
        {"a": b"bytes", "b": float("inf")},
        (1, 2),
    ]
    for source in (".", ".a", "{a}", "[.a]", ". + {}", "first(.a)"):
        assert check_same(source, odd), source
    with pytest.raises(TransformError, match="not a JSON value"):
        compile_program("{a}").all({"a": object()})


def test_deeply_nested_data_is_checked_without_recursion() -> None:
    """Decoded data can be nested beyond Python's recursion limit: the check of a
    native program's output must not raise RecursionError (it would stop the
    pipeline as an unclassified error)."""
    deep: Any = 1
    for _ in range(1500):
        deep = [deep]
    value = {"a": deep}
    program = compile_program("{a}")
    assert program.native is not None  # type: ignore[attr-defined]
    assert program.all(value) == [{"a": deep}]
    bad = [0]
    node: Any = bad
    for _ in range(1200):
        node.append([])
        node = node[-1]
    node.append((1, 2))  # not JSON, far down
    native, plain = JaqProgram("{a}"), JaqProgram("{a}", native=False)
    assert _run(native, {"a": bad}) == _run(plain, {"a": bad})
