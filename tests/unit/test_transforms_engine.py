"""The jq engine layer: compile once, run on Python values, errors classified."""

from __future__ import annotations

import pytest

from eventpipe.errors import PermanentError, is_retriable
from eventpipe.transforms.errors import TransformError
from eventpipe.transforms.jq_engine import (
    DEFAULT_ENGINE,
    NO_OUTPUT,
    JaqProgram,
    JqCompileError,
    LibjqProgram,
    compile_program,
    is_truthy,
)
from tests.unit.test_transforms_conformance import cross_engine  # noqa: F401

pytestmark = pytest.mark.usefixtures("cross_engine")

ENGINES = ["jaq", "jq"]


def test_jaq_is_the_default() -> None:
    assert DEFAULT_ENGINE == "jaq"
    assert isinstance(compile_program(".a"), JaqProgram)
    assert isinstance(compile_program(".a", "jq"), LibjqProgram)


@pytest.mark.parametrize("engine", ENGINES)
def test_all_and_first(engine: str) -> None:
    p = compile_program(".items[] | .sku", engine)  # type: ignore[arg-type]
    value = {"items": [{"sku": "a"}, {"sku": "b"}]}
    assert p.all(value) == ["a", "b"]
    assert p.first(value) == "a"
    assert p.all({"items": []}) == []
    assert p.first({"items": []}) is NO_OUTPUT


@pytest.mark.parametrize("engine", ENGINES)
def test_first_is_lazy(engine: str) -> None:
    # The error after the first output is never reached.
    p = compile_program('1, error("never")', engine)  # type: ignore[arg-type]
    assert p.first(None) == 1
    with pytest.raises(TransformError):
        p.all(None)


@pytest.mark.parametrize("engine", ENGINES)
def test_runtime_error_is_permanent_transform_error(engine: str) -> None:
    p = compile_program(".a", engine)  # type: ignore[arg-type]
    with pytest.raises(TransformError, match="jq program failed") as info:
        p.all(5)
    assert isinstance(info.value, PermanentError)
    assert not is_retriable(info.value)
    assert info.value.__cause__ is not None  # wrapped where it entered


@pytest.mark.parametrize("engine", ENGINES)
def test_non_json_input_is_a_transform_error(engine: str) -> None:
    p = compile_program(".", engine)  # type: ignore[arg-type]
    with pytest.raises(TransformError):
        p.all({"a": object()})


def test_program_jaq_cannot_compile_names_engine_jq() -> None:
    # `$__loc__` is libjq-only: valid jq that jaq does not know.
    with pytest.raises(JqCompileError) as info:
        compile_program("{line: $__loc__.line}", "jaq")
    msg = info.value.message
    assert "engine: jq" in msg
    assert "valid jq" in msg
    assert "undefined variable" in msg
    assert compile_program("{line: $__loc__.line}", "jq").all(None) == [{"line": 1}]


def test_program_no_engine_compiles_says_engine_jq_would_not_help() -> None:
    with pytest.raises(JqCompileError) as info:
        compile_program(".a |||", "jaq")
    msg = info.value.message
    assert msg.startswith("not a valid jq program")
    assert "libjq rejects it too" in msg
    assert "`engine: jq` would not help" in msg


def test_jaq_compile_message_points_at_the_token() -> None:
    with pytest.raises(JqCompileError) as info:
        compile_program(".a | nosuchfilter", "jaq")
    assert "undefined filter `nosuchfilter` at line 1, column 6" in info.value.message
    assert "╭" not in info.value.message  # the drawing is condensed


def test_libjq_compile_error_is_one_line() -> None:
    with pytest.raises(JqCompileError) as info:
        compile_program(".a |||", "jq")
    assert "\n" not in info.value.message
    assert "syntax error" in info.value.message


def test_unknown_engine() -> None:
    with pytest.raises(JqCompileError, match="unknown jq engine 'gojq'"):
        compile_program(".", "gojq")  # type: ignore[arg-type]


def test_truthiness_is_jq_truthiness() -> None:
    assert [is_truthy(v) for v in (None, False, True, 0, "", [], {})] == [
        False,
        False,
        True,
        True,
        True,
        True,
        True,
    ]
