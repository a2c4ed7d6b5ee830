"""Fusing neighbouring jq steps of a chain into one compiled program.

Every engine call converts its input from Python into the engine and its
outputs back, so a run of consecutive jq-family steps on one engine is compiled
into ONE program, run with one conversion each way.  A fusable run is, in
order: any ``filter`` steps, at most one ``set`` or ``route``, then any ``jq``
steps with ``apply_to: data`` -- two or more steps in all.  Measured with jaq on
~600-byte events (bench/transforms.py; us per event, fused vs one call per step):

* data run ``jq | jq``: 21 vs 25;
* filters ended by set / route: 14-16 vs 19-27;
* filter then a data ``jq`` (then validate): 24 vs 27 -- unfused, both calls
  convert the whole ``data`` into the engine; fused, it is converted once.

A ``filter`` that reads nothing but ``.data`` (``.data.total > 10``; the rule is
in :mod:`.data_filter`) counts as a data step, ``select(first(Q))`` with
``.data`` taken off its paths, wherever it stands: after data steps it joins
their run, and leading filters that all qualify take the run onto ``data``
alone (the benchmark's chain, projection | ``.data.total > 10`` | merge: 40 -> 27).
Likewise a ``set`` / ``route`` whose expressions all read nothing but ``.data``
runs its values program on data: it may follow data steps (still at most one
set / route a run), and a run whose filters and set / route all qualify goes to
the engine as ``data`` alone.  The backfill benchmark's chain (projection |
``.data.total > 10`` | ``set subject: .data.order_id`` | drop_fields | merge):
one engine call fewer an event (jq + filter + set fused; 55 -> 45 us an event
for those steps with jaq, measured on a loaded machine).

What is NOT fused, because it measured slower or no faster: a data ``jq``
followed by a filter that reads more than ``.data``, a set or a route.  Running
the data program inside the event-form program (``(.data | P) as $d | .data =
$d | select(...)``: 26-27 vs 23-25 for the two calls; with the attributes
passed as a jq variable and ``$attrs + {data: $d}``: 26 vs 25) costs jaq at
least as much as the second call it saves.

Why a fused program means the same as the steps one after the other
-------------------------------------------------------------------
A chain flat-maps: each output of step k, in order, goes through step k+1.
jq's pipe ``a | b`` is exactly that flat-map.

* data steps only: step k's outputs replace ``data`` and nothing else, so step
  k+1 sees exactly what ``P(k)`` produced: ``(P1) | (P2)``, run on ``data``.
  Values cross no Python boundary in between, which is lossless for JSON values.
* filters: a filter ``Q`` keeps the event iff ``Q``'s first output is neither
  ``false`` nor ``null`` -- jq's ``select(first(Q))``, which emits the event
  unchanged (at most once), so the next part sees the same JSON form.
* a ``set``/``route`` contributes its values program ``V`` (``[[first(E1)],
  ...]``), whose output the step's own Python ``assign`` applies, exactly as
  unfused.  What it changes (attributes) is applied in Python, so only data
  steps may follow it: they read ``data`` alone, which ``assign`` leaves as it
  is.  With data steps after it the program ends ``[(V), [.data | (P1) | ...]]``;
  should ``assign`` set a ``datacontenttype`` that is not JSON, the data steps
  run unfused on the changed event and reject it as they would.
* data steps after filters: ``.data | (P1) | ...``; each output replaces
  ``data`` of the (unchanged) event.
* a set / route on data: ``A | [(V'), [B]]`` on ``data``, where ``A`` are the
  data steps before it (filters of ``.data`` included), ``V'`` its values
  program with ``.data`` taken off its paths (the same rule as a filter's: it
  reads the data ``A`` produced, which is what the event form's ``.data`` would
  hold), and ``B`` the data steps after it (``.`` when none).  ``assign``
  applies the values to the event, then each of ``B``'s outputs replaces its
  data.  Should ``assign`` make the data not JSON, the event runs unfused.
* a filter that reads only ``.data``, as a data step: ``Q'`` (``Q`` with
  ``.data`` taken off its paths) computes on ``data`` what ``Q`` computes on
  the event form, whose ``data`` is exactly the event's JSON data, so
  ``select(first(Q'))`` passes the data on unchanged (at most once) exactly
  when the filter keeps the event.  Non-JSON data is not given to a run with
  data steps at all (above).

Each user program is parenthesised on its own lines (so a trailing ``# comment``
cannot swallow what follows) and was compiled alone first.  Errors: jq aborts
a program at its first error, as the chain aborts the event.  When a fused
program fails (or a run with data steps meets data that is not JSON, which data
steps reject) the event is re-run through the unfused steps, so the error names
the exact step and reads exactly as without fusion.
``tests/unit/test_transforms_fusion.py`` checks fused == unfused on both engines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

from .base import TransformStep
from .errors import StepError
from .event_form import has_json_data, to_event_form, with_data
from .jq_engine import EngineName, JqCompileError, compile_program

if TYPE_CHECKING:
    from eventpipe.envelope import CloudEvent

    from .base import Step

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
    on_data: str | None = None
    """filter: the predicate, assign: the values program, rewritten to run on
    ``data``, when it reads nothing but ``.data`` (:func:`.data_filter.data_form`)."""
    data_only: bool = False
    """assign only: ``source`` runs on ``data`` (see :meth:`as_data`)."""

    def as_data(self) -> FusablePart:
        """A filter that reads only ``.data``, as a data step: ``select(first(Q))``
        on data keeps or drops the event exactly as ``Q`` on the event form.  A set /
        route that reads only ``.data``: its values program on data."""
        assert self.kind in ("filter", "assign") and self.on_data is not None
        if self.kind == "assign":
            return FusablePart("assign", self.engine, self.on_data, self.assign, data_only=True)
        return FusablePart("data", self.engine, f"select(first{parenthesise(self.on_data)})")


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
    """A fusable run of steps (see the module docstring) as one program."""

    __slots__ = (
        "_assign",
        "_data_members",
        "_has_data",
        "_on_data",
        "_program",
        "members",
        "name",
        "source",
    )

    def __init__(self, members: Sequence[tuple[Step, FusablePart]]) -> None:
        parts = [p for _, p in members]
        if len(members) < 2 or len({p.engine for p in parts}) != 1:
            raise ValueError("a fused run needs two or more parts on one engine")
        if sum(p.kind == "assign" for p in parts) > 1 or not all(
            _continues(a, b) for a, b in pairwise(parts)
        ):
            raise ValueError(
                "a fused run is filters, then at most one set / route, then data steps"
            )
        self.members = [StepRunner(s) for s, _ in members]
        self.name = "+".join(r.name for r in self.members)
        self._on_data = parts[0].kind == "data" or parts[0].data_only
        self._has_data = any(p.kind == "data" for p in parts)
        self._assign = next((p.assign for p in parts if p.kind == "assign"), None)
        self._data_members = [
            r for r, p in zip(self.members, parts, strict=True) if p.kind == "data"
        ]
        self.source = fused_source(parts)
        self._program = compile_program(self.source, parts[0].engine)

    def apply(self, event: CloudEvent) -> list[CloudEvent]:
        if self._has_data and not has_json_data(event):
            return run_unfused(self.members, event)  # the data steps say why
        try:
            assign = self._assign
            if self._on_data:
                outs = self._program.all(event.data)
                if assign is None:
                    return [with_data(event, d) for d in outs]
                assigned = self._assigned(assign, event, outs)
                return run_unfused(self.members, event) if assigned is None else assigned
            outs = self._program.all(to_event_form(event))
            if assign is None:
                if self._has_data:
                    return [with_data(event, d) for d in outs]
                return [event for _ in outs]
            if not self._has_data:
                return [assign(event, o) for o in outs]
            result: list[CloudEvent] = []
            for values, datas in outs:
                changed = assign(event, values)
                if has_json_data(changed):
                    result.extend([with_data(changed, d) for d in datas])
                else:  # set gave it a datacontenttype that is not JSON
                    result.extend(run_unfused(self._data_members, changed))
            return result
        except StepError as exc:
            fused_error = exc
        out = run_unfused(self.members, event)
        # The unfused steps should have failed the same way.
        log.warning(
            "fused steps %s failed (%s) but succeeded unfused; kept the unfused result",
            self.name,
            fused_error,
        )
        return out

    @staticmethod
    def _assigned(
        assign: Callable[[CloudEvent, Any], CloudEvent], event: CloudEvent, outs: list[Any]
    ) -> list[CloudEvent] | None:
        """The events of an on-data run with a set / route (``[values, datas]``
        outputs); None when ``assign`` made the data not JSON (run it unfused)."""
        result: list[CloudEvent] = []
        for values, datas in outs:
            changed = assign(event, values)  # its data is replaced just below
            if not has_json_data(changed):  # set gave it a datacontenttype not JSON
                return None
            result.extend([with_data(changed, d) for d in datas])
        return result


def fused_source(parts: Sequence[FusablePart]) -> str:
    """The one program for a run of ``parts`` (see the module docstring)."""
    at = next((i for i, p in enumerate(parts) if p.data_only), None)
    if at is not None:  # a set / route on data, between data steps
        before = [parenthesise(p.source) for p in parts[:at]]
        after = " | ".join(parenthesise(p.source) for p in parts[at + 1 :]) or "."
        return " | ".join([*before, f"[{parenthesise(parts[at].source)}, [{after}]]"])
    filters = [f"select(first{parenthesise(p.source)})" for p in parts if p.kind == "filter"]
    values = [parenthesise(p.source) for p in parts if p.kind == "assign"]
    data = " | ".join(parenthesise(p.source) for p in parts if p.kind == "data")
    if not filters and not values:
        return data  # data steps only: run on data itself
    if values and data:
        tail = f"[{values[0]}, [.data | {data}]]"
    elif values:
        tail = values[0]
    elif data:
        tail = f".data | {data}"
    else:
        tail = "true"
    return " | ".join([*filters, tail])


Runner = StepRunner | FusedRunner


def plan(steps: Sequence[Step], *, fuse: bool = True) -> list[Runner]:
    """Runners for ``steps``: each maximal fusable run becomes one FusedRunner."""
    runners: list[Runner] = []
    i = 0
    while i < len(steps):
        first = _part(steps[i]) if fuse else None
        group: list[tuple[Step, FusablePart]] = [] if first is None else [(steps[i], first)]
        j = i + 1
        while group and j < len(steps):
            nxt = _part(steps[j])
            if nxt is None or nxt.engine != group[0][1].engine:
                break
            last = group[-1][1]
            if (last.kind == "data" or last.data_only) and nxt.on_data is not None:
                nxt = nxt.as_data()  # a filter / set / route of .data after data steps
            if not _continues(group[-1][1], nxt) or (
                nxt.kind == "assign" and any(p.kind == "assign" for _, p in group)
            ):
                break
            group.append((steps[j], nxt))
            j += 1
        group = _on_data_when_possible(group)
        if len(group) < 2:
            runners.append(StepRunner(steps[i]))
            i += 1
            continue
        try:
            runners.append(FusedRunner(group))
        except JqCompileError:  # pragma: no cover - each part compiled alone
            runners.extend(StepRunner(s) for s, _ in group)
        i = j
    return runners


def _on_data_when_possible(
    group: list[tuple[Step, FusablePart]],
) -> list[tuple[Step, FusablePart]]:
    """Leading filters (and a set / route) before data steps, when each reads only
    ``.data``, run on data too: the run then goes to the engine as ``data`` alone,
    not the whole event form."""
    parts = [p for _, p in group]
    if not any(p.kind == "data" for p in parts):
        return group
    on_event = [p for p in parts if p.kind != "data" and not p.data_only]
    if not all(p.on_data is not None for p in on_event):
        return group
    return [(s, p if p.kind == "data" or p.data_only else p.as_data()) for s, p in group]


_ORDER: dict[PartKind, int] = {"filter": 0, "assign": 1, "data": 2}


def _continues(prev: FusablePart, nxt: FusablePart) -> bool:
    """Whether ``nxt`` may follow ``prev`` in one run: filters, then at most one
    set / route, then data steps."""
    if nxt.data_only:  # a set / route on data may follow data steps
        return prev.kind != "assign"
    a, b = _ORDER[prev.kind], _ORDER[nxt.kind]
    return b > a or (b == a and nxt.kind != "assign")


def _part(step: Step) -> FusablePart | None:
    return step.fusable() if isinstance(step, TransformStep) else None
