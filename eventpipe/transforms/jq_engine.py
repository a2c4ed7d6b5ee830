"""jq engines behind one interface: ``jaq`` (jaq-rs, the default) and ``jq`` (libjq).

A :class:`Program` is compiled once, at config load, and run per event on a
Python JSON value:

* ``all(value)`` -> every output, in order (a jq program yields 0..n values);
* ``first(value)`` -> the first output or :data:`NO_OUTPUT`; evaluation stops
  after the first output on both engines.

jaq is run on Python values directly (``Filter.run`` / ``Filter.first``), one
call per event.  Measured on ~600-byte events (bench/transforms.py, us per
event): a call costs ~0.8 and converting the data into jaq ~3.5; the rest is
jaq evaluating the program (~11 for an 8-field projection).  The alternatives
were slower: JSON text in (orjson.dumps + jaq's parser: 18.7 vs 15.8 for that
projection) and one call per batch of 100 events (``[.[] | try [(P)] catch
null]`` on a list, 19.2; a JSON text stream, 19.1) -- jaq evaluates a program
over the elements of a large input more slowly than over a root input, which
eats the per-call saving.  libjq's fastest path is JSON text, so its programs
are fed ``orjson.dumps(value)``.

Programs in a simple subset of jq (paths, object and array construction,
comparisons, ``+``, ``select`` / ``first`` / ``length``, ...) skip jaq altogether:
:mod:`.jq_native` compiles them to Python closures over the value, and hands any
input they do not handle exactly to jaq (the ``engine: jaq`` default; ``engine:
jq`` always runs libjq).  The backfill benchmark's projection takes ~7 us that
way against jaq's ~32 (bench/transforms.py prints both).

A runtime failure raises :class:`~eventpipe.transforms.errors.TransformError`
(permanent, for that event).  A program that does not compile raises
:class:`JqCompileError`, which steps turn into a ``ConfigError`` at load.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Final, Literal

import jaq
import jq
import orjson

from .errors import TransformError
from .jq_native import Fallback, NativeProgram, compile_native

EngineName = Literal["jaq", "jq"]
DEFAULT_ENGINE: Final[EngineName] = "jaq"
ENGINE_NAMES: Final[tuple[EngineName, ...]] = ("jaq", "jq")


class _NoOutput:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_OUTPUT"

    def __reduce__(self) -> str:  # a singleton, also through copy / pickle
        return "NO_OUTPUT"


NO_OUTPUT: Final = _NoOutput()
"""What :meth:`Program.first` returns when the program yields nothing."""


class JqCompileError(Exception):
    """The program does not compile on the chosen engine; ``message`` says why and
    what to do about it."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def is_truthy(value: Any) -> bool:
    """jq truthiness: everything but ``false`` and ``null`` (so ``0`` and ``""`` are true)."""
    return value is not None and value is not False


class Program(ABC):
    """A compiled jq program."""

    engine: ClassVar[EngineName]
    __slots__ = ("source",)

    def __init__(self, source: str) -> None:
        self.source = source

    @abstractmethod
    def all(self, value: Any) -> list[Any]:
        """Every output for one input value."""

    @abstractmethod
    def first(self, value: Any) -> Any:
        """The first output, or :data:`NO_OUTPUT`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r})"


_NATIVE = [True]  # whether jaq programs compiled now get the native tier


@contextmanager
def native_tier(enabled: bool) -> Iterator[None]:
    """Programs compiled inside run with (the default) or without the native tier,
    for benchmarks and tests that compare the two; not a setting (``engine: jq``
    is the reference engine for whoever wants libjq's semantics)."""
    before = _NATIVE[0]
    _NATIVE[0] = enabled
    try:
        yield
    finally:
        _NATIVE[0] = before


class JaqProgram(Program):
    """jaq, with the native tier (:mod:`.jq_native`) for programs in its subset:
    an input the closures leave to the engine (:class:`Fallback`) runs on jaq."""

    engine: ClassVar[EngineName] = "jaq"
    __slots__ = ("_filter", "native")

    def __init__(self, source: str, *, native: bool | None = None) -> None:
        super().__init__(source)
        try:
            self._filter = jaq.compile(source)
        except jaq.CompileError as exc:
            raise JqCompileError(_jaq_compile_message(source, str(exc))) from exc
        if native is None:
            native = _NATIVE[0]
        self.native: NativeProgram | None = compile_native(source) if native else None

    def all(self, value: Any) -> list[Any]:
        native = self.native
        if native is not None:
            try:
                return native.all(value)
            except Fallback:
                pass
        try:
            return self._filter.run(value)
        except jaq.JaqError as exc:
            raise TransformError(f"jq program failed: {exc}") from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise TransformError(f"input is not a JSON value: {exc}") from exc

    def first(self, value: Any) -> Any:
        native = self.native
        if native is not None:
            try:
                return native.first(value, NO_OUTPUT)
            except Fallback:
                pass
        try:
            return self._filter.first(value)
        except IndexError:
            return NO_OUTPUT
        except jaq.JaqError as exc:
            raise TransformError(f"jq program failed: {exc}") from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise TransformError(f"input is not a JSON value: {exc}") from exc


def _to_json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:  # orjson.JSONEncodeError: non-str keys, ints > 64 bit, ...
        raise TransformError(f"input is not a JSON value: {exc}") from exc


class LibjqProgram(Program):
    engine: ClassVar[EngineName] = "jq"
    __slots__ = ("_program",)

    def __init__(self, source: str) -> None:
        super().__init__(source)
        try:
            self._program = jq.compile(source)
        except ValueError as exc:
            raise JqCompileError(f"not a valid jq program: {_libjq_message(str(exc))}") from exc

    def all(self, value: Any) -> list[Any]:
        text = _to_json_text(value)
        try:
            return self._program.input_text(text).all()
        except ValueError as exc:
            raise TransformError(f"jq program failed: {exc}") from exc

    def first(self, value: Any) -> Any:
        text = _to_json_text(value)
        try:
            return self._program.input_text(text).first()
        except StopIteration:
            return NO_OUTPUT
        except ValueError as exc:
            raise TransformError(f"jq program failed: {exc}") from exc


_PROGRAMS: Final[dict[str, type[Program]]] = {"jaq": JaqProgram, "jq": LibjqProgram}


def compile_program(source: str, engine: EngineName = DEFAULT_ENGINE) -> Program:
    """Compile ``source`` on ``engine``; raises :class:`JqCompileError`."""
    try:
        cls = _PROGRAMS[engine]
    except KeyError:
        raise JqCompileError(
            f"unknown jq engine {engine!r}; use one of: {', '.join(ENGINE_NAMES)}"
        ) from None
    return cls(source)


# --------------------------------------------------------------- messages
_SOURCE_LINE = re.compile(r"^\s*(\d+) │ ")
_MARK_CHARS = "─┬"


def _jaq_compile_message(source: str, report: str) -> str:
    details = "; ".join(_condense_jaq_report(report)) or report.strip()
    try:
        jq.compile(source)
    except ValueError as exc:
        return (
            f"not a valid jq program: {details} (libjq rejects it too: "
            f"{_libjq_message(str(exc))}; so `engine: jq` would not help)"
        )
    return (
        f"jaq cannot compile this program: {details}. It is valid jq, so set "
        "`engine: jq` on this step to run it on libjq"
    )


def _condense_jaq_report(report: str) -> list[str]:
    """jaq's compile errors are ariadne-style drawings; keep kind, token and position."""
    lines = report.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if not line.startswith("Error: "):
            continue
        kind = line[len("Error: ") :].strip()
        where = ""
        for j in range(i + 1, min(i + 6, len(lines) - 1)):
            m = _SOURCE_LINE.match(lines[j])
            if not m:
                continue
            text = lines[j][m.end() :]
            marks = lines[j + 1][m.end() :]
            starts = [k for k, ch in enumerate(marks) if ch in _MARK_CHARS]
            if starts:
                col = starts[0]
                end = col
                while end < len(marks) and marks[end] in _MARK_CHARS:
                    end += 1
                token = text[col:end].strip()
                shown = f" `{token}`" if token else ""
                where = f"{shown} at line {m.group(1)}, column {col + 1}"
            break
        out.append(f"{kind}{where}")
    return out


def _libjq_message(message: str) -> str:
    """libjq's first line, without the ``jq: error:`` prefix and the caret drawing."""
    first = message.strip().splitlines()[0] if message.strip() else message
    return first.removeprefix("jq: error: ").rstrip(":")
