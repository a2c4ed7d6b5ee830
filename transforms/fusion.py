"""Fusing neighbouring jq steps of a chain into one compiled program.

Every jq call converts its whole input from Python into the engine and its
outputs back; for a ~600-byte event that conversion, not the program, is most
of the cost.  A run of consecutive jq-family steps on one engine -- ``jq`` with
``apply_to: data`` (kind ``data``), ``filter`` (``filter``) and at most one
``set`` / ``route`` at its end (``assign``) -- is therefore compiled into ONE
program and run with one conversion each way.

Why the fused program means the same as the steps one after the other
---------------------------------------------------------------------
A chain flat-maps: each output of step k, in order, goes through step k+1.
jq's pipe ``a | b`` is exactly that flat-map, so each step becomes a pipe
segment over the event's JSON form (:mod:`eventpipe.transforms.event_form`):

* data step ``P``:  ``(.data | (P)) as $d | setpath(["data"]; $d)`` -- one event
  per output of ``P``, its ``data`` replaced, everything else unchanged; the
  unfused step builds the same object from ``with_data(event, d)`` (``data``
  is always present and last in the form, so even key order agrees);
* filter ``Q``:     ``select(first(Q))`` -- kept iff ``Q``'s first output is
  neither ``false`` nor ``null``, the rule the unfused filter applies to
  ``Program.first``;
* assign ``V``:     the step's own values program (``[[first(E1)], ...]``),
  whose output the step's Python ``assign`` applies, exactly as unfused.  It
  must be last because what it changes (attributes) is applied in Python.

A group of data steps only runs on ``data`` itself: ``(P1) | (P2)``.  Each
user program is parenthesised on its own lines (a trailing ``# comment``
cannot swallow what follows) and compiled alone first, so it has no free
variables that the ``$__eventpipe_data`` binding could capture.

Errors: jq aborts a program at its first error, as the unfused chain aborts
the event.  When a fused program fails -- or the event's data is binary, which
data steps reject -- the event is re-run through the unfused steps, so the
error names the exact step and reads exactly as without fusion.
``tests/unit/test_transforms_fusion.py`` checks fused == unfused on both
engines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .base import TransformStep
from .errors import StepError
from .event_form import has_json_data, to_event_form, with_data
from .jq_engine import EngineName, JqCompileError, compile_program

if TYPE_CHECKING:
    from eventpipe.base import Step
    from eventpipe.envelope import CloudEvent

log = logging.getLogger("eventpipe.transforms.fusion")

PartKind = Literal["data", "filter", "assign"]


@dataclass(frozen=True, slots=True)
class FusablePart:
    """A step's meaning as a jq fragment (see the module docstring)."""

    kind: PartKind
    engine: EngineName
    source: str
    """data: the program; filter: the predicate; assign: the values program."""
    assign: Callable[[CloudEvent, Any], CloudEvent] | None = None
    """assign only: apply the values program's output to the event."""


def parenthesise(source: str) -> str:
    return f"(\n{source}\n)"


class StepRunner:
    """Runs one step of a chain and names it in the errors it lets out."""

    __slots__ = ("_call", "name", "step")

    def __init__(self, step: Step) -> None:
        self.step = step
        self.name = step.name
        # Inside a chain, outputs keep their ids until the end (Chain.process).
        self._call: Callable[[CloudEvent], list[CloudEvent]] = (
            step.apply if isinstance(step, TransformStep) else step.process
        )

    def apply(self, event: CloudEvent) -> list[CloudEvent]:
        try:
            return self._call(event)
        except StepError as exc:
            if exc.step is None:
                exc.step = self.name
            raise


def run_unfused(runners: Sequence[StepRunner], event: CloudEvent) -> list[CloudEvent]:
    events = [event]
    for runner in runners:
        if len(events) == 1:
            events = runner.apply(events[0])
        else:
            events = [out for e in events for out in runner.apply(e)]
        if not events:
            break
    return events


class FusedRunner:
    """Several jq-family steps run as one program."""

    __slots__ = ("_assign", "_by_data", "_has_data", "_program", "members", "name", "source")

    def __init__(self, members: Sequence[tuple[Step, FusablePart]]) -> None:
        parts = [p for _, p in members]
        engines = {p.engine for p in parts}
        if len(members) < 2 or len(engines) != 1:
            raise ValueError("a fused group needs two or more parts on one engine")
        if any(p.kind == "assign" for p in parts[:-1]):
            raise ValueError("set / route may only end a fused group")
        self.members = [StepRunner(s) for s, _ in members]
        self.name = "+".join(r.name for r in self.members)
        self._has_data = any(p.kind == "data" for p in parts)
        self._by_data = all(p.kind == "data" for p in parts)
        self._assign = parts[-1].assign if parts[-1].kind == "assign" else None
        self.source = fused_source(parts)
        self._program = compile_program(self.source, parts[0].engine)

    def apply(self, event: CloudEvent) -> list[CloudEvent]:
        if self._has_data and not has_json_data(event):
            return self._unfused(event)
        try:
            if self._by_data:
                return [with_data(event, d) for d in self._program.all(event.data)]
            outs = self._program.all(to_event_form(event))
            assign = self._assign
            if assign is not None:
                if self._has_data:
                    return [assign(with_data(event, o[0]), o[1]) for o in outs]
                return [assign(event, o) for o in outs]
            if self._has_data:
                return [with_data(event, d) for d in outs]
            return [event for _ in outs]
        except StepError as exc:
            fused_error = exc
        return self._unfused(event, fused_error)

    def _unfused(self, event: CloudEvent, fused_error: StepError | None = None) -> list[CloudEvent]:
        out = run_unfused(self.members, event)
        if fused_error is not None:
            # The unfused steps should have failed the same way.
            log.warning(
                "fused steps %s failed (%s) but succeeded unfused; kept the unfused result",
                self.name,
                fused_error,
            )
        return out


def fused_source(parts: Sequence[FusablePart]) -> str:
    """The one program for ``parts`` (see the module docstring)."""
    if all(p.kind == "data" for p in parts):
        return " | ".join(parenthesise(p.source) for p in parts)
    has_data = any(p.kind == "data" for p in parts)
    segments: list[str] = []
    for p in parts:
        if p.kind == "data":
            segments.append(
                f"(.data | {parenthesise(p.source)}) as $__eventpipe_data"
                ' | setpath(["data"]; $__eventpipe_data)'
            )
        elif p.kind == "filter":
            segments.append(f"select(first{parenthesise(p.source)})")
        else:
            values = parenthesise(p.source)
            segments.append(f"[.data, {values}]" if has_data else values)
    if parts[-1].kind != "assign":
        segments.append(".data" if has_data else "true")
    return " | ".join(segments)


Runner = StepRunner | FusedRunner


def plan(steps: Sequence[Step], *, fuse: bool = True) -> list[Runner]:
    """Runners for ``steps``: maximal fusable runs become one FusedRunner."""
    runners: list[Runner] = []
    i = 0
    while i < len(steps):
        part = _part(steps[i]) if fuse else None
        if part is None:
            runners.append(StepRunner(steps[i]))
            i += 1
            continue
        group: list[tuple[Step, FusablePart]] = [(steps[i], part)]
        j = i + 1
        while group[-1][1].kind != "assign" and j < len(steps):
            nxt = _part(steps[j])
            if nxt is None or nxt.engine != part.engine:
                break
            group.append((steps[j], nxt))
            j += 1
        if len(group) == 1:
            runners.append(StepRunner(steps[i]))
        else:
            try:
                runners.append(FusedRunner(group))
            except JqCompileError:  # pragma: no cover - each part compiled alone
                runners.extend(StepRunner(s) for s, _ in group)
        i = j
    return runners


def _part(step: Step) -> FusablePart | None:
    return step.fusable() if isinstance(step, TransformStep) else None
