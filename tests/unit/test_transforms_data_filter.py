"""A filter that reads only ``.data``, rewritten to run on data, must keep and drop
exactly the events the original keeps and drops (and fail where it fails), on both
engines; anything that may read more than ``.data`` is not rewritten."""

from __future__ import annotations

from typing import Any

import pytest

from eventpipe.envelope import CloudEvent
from eventpipe.transforms.data_filter import data_form
from eventpipe.transforms.errors import TransformError
from eventpipe.transforms.event_form import to_event_form
from eventpipe.transforms.jq_engine import NO_OUTPUT, compile_program, is_truthy

REWRITTEN = [
    (".data", "."),
    (".data.total > 10", ".total > 10"),
    ('.data.status == "paid" and .data.total >= 100', '.status == "paid" and .total >= 100'),
    ('.data["odd key"] != null', '.["odd key"] != null'),
    (".data.items[0].qty * 2 > .data.limit", ".items[0].qty * 2 > .limit"),
    ("(.data.a // .data.b) == 1 or false", "(.a // .b) == 1 or false"),
    (".data.a - -1 > 0", ".a - -1 > 0"),
    ('".data.total" == .data.x', '".data.total" == .x'),  # a string is not a path
    (".data.and", ".and"),
    (".data | length > 1", ". | length > 1"),
    (".data.items | map(.qty) | add > 3", ".items | map(.qty) | add > 3"),
    (".data.x | . as $v | $v > 1 and (.id | not)", ".x | . as $v | $v > 1 and (.id | not)"),
    ("true", "true"),
    ("null", "null"),
    ("1 > 2", "1 > 2"),
]

NOT_REWRITTEN = [
    ".id",
    '.type == "x"',
    '.data.total > 10 and .type == "x"',
    ".datacontenttype",
    ".data_base64",
    ".dataschema",
    ".datax > 1",
    "(.data | length) > 1",  # a pipe inside parentheses
    ".data.items[]",
    ".data.items[1:]",
    ".data.x?",
    ".data.items[-1]",
    '.data["\\(.id)"]',  # interpolation reads the event
    '"\\(.id)" == .data.x',
    'has("data")',
    "length > 1",
    ".data.x > $min",
    "..",
    '.["data"].x',
    '."data".x',
    ".data.x |= 1",
    ".data.x = 1",
    ".data.x += 1",
    ".data.x > 1 # .id",
    "@json == .data",
    "if .data.x then true else false end",
    "not",
    ".",
    ".data)",
    "(.data",
    "   ",
]


@pytest.mark.parametrize(("expression", "expected"), REWRITTEN)
def test_rewritten(expression: str, expected: str) -> None:
    assert data_form(expression) == expected


@pytest.mark.parametrize("expression", NOT_REWRITTEN)
def test_not_rewritten(expression: str) -> None:
    assert data_form(expression) is None


DATA: list[Any] = [
    {"total": 123, "status": "paid", "limit": 3, "items": [{"qty": 2}, {"qty": 3}], "and": 1},
    {"total": 5, "status": "open", "items": [], "odd key": 0, "a": None, "b": 1},
    {"total": "12", "x": 2, "a": 1},
    {"items": "not a list", "x": None},
    [1, 2, 3],
    "text",
    7,
    None,
]


def outcome(program: Any, value: Any) -> Any:
    try:
        v = program.first(value)
    except TransformError:
        return "error"
    return "keep" if v is not NO_OUTPUT and is_truthy(v) else "drop"


@pytest.mark.parametrize("engine", ["jaq", "jq"])
@pytest.mark.parametrize("expression", [e for e, _ in REWRITTEN])
def test_same_outcome_on_data_as_on_the_event_form(engine: Any, expression: str) -> None:
    original = compile_program(expression, engine)
    rewritten = data_form(expression)
    assert rewritten is not None
    on_data = compile_program(rewritten, engine)
    outcomes = set()
    for data in DATA:
        event = CloudEvent.create("shop.order", "/shop", data, id="e1", subject="s")
        want = outcome(original, to_event_form(event))
        assert outcome(on_data, data) == want, (expression, data)
        outcomes.add(want)
    if expression not in ("true", "null", "1 > 2", ".data"):
        assert len(outcomes) > 1, expression  # the corpus tells keep from drop


@pytest.mark.parametrize("engine", ["jaq", "jq"])
def test_a_lone_filter_runs_on_data_with_the_same_results_and_errors(engine: Any) -> None:
    from eventpipe.transforms import Chain, StepError

    def run(chain: Any, event: CloudEvent) -> Any:
        try:
            return [e.id for e in chain.process(event)]
        except StepError as exc:
            return (exc.step, str(exc))

    for expression, _ in REWRITTEN:
        [step] = Chain([{"filter": {"expression": expression, "engine": engine}}]).steps
        assert step._on_data is not None  # type: ignore[attr-defined]
        plain = Chain([{"filter": {"expression": expression, "engine": engine}}])
        plain.steps[0]._on_data = None  # type: ignore[attr-defined]
        with_data = Chain([{"filter": {"expression": expression, "engine": engine}}])
        for data in [*DATA, b"\x00binary"]:
            event = CloudEvent.create("shop.order", "/shop", data, id="e1")
            assert run(with_data, event) == run(plain, event), (expression, data)
