"""The ``jq`` step: run a jq program on each event's data (or the whole event).

An example is ``PLUGIN``'s ``example`` (shown in docs/reference.md#step-jq with
every key, and loaded by tests/unit/test_reference.py).

``apply_to: data``: each output replaces ``data``; the other attributes stay.
``apply_to: event``: the program sees the event's JSON form (attributes,
extensions, ``data``) and each output must be such an object; it is validated
back into a CloudEvent.  Outputs of one event that share (source, id) get
``<id>:<n>`` ids (``event_form.distinct_ids``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from eventpipe.envelope import CloudEvent
from eventpipe.errors import InvalidEventError
from eventpipe.plugin import PluginConfig

from .base import StepContext, TransformStep, compile_field
from .errors import TransformError
from .event_form import (
    from_event_form,
    has_json_data,
    to_event_form,
    with_data,
)
from .fusion import FusablePart
from .jq_engine import DEFAULT_ENGINE, EngineName


def non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a jq program, not blank")
    return value


class JqConfig(PluginConfig):
    program: str = Field(description="the jq program; each output is one event (0..n)")
    apply_to: Literal["data", "event"] = Field(
        "data",
        description="data: the program reads data and its outputs replace it; event: it reads "
        "the whole event and returns whole events",
    )
    engine: EngineName = Field(DEFAULT_ENGINE, description="jq engine: jaq (jaq-rs) or jq (libjq)")

    _program = field_validator("program")(non_blank)


def require_json_data(event: CloudEvent) -> None:
    if not has_json_data(event):
        kind = "binary" if isinstance(event.data, bytes | bytearray) else "not JSON"
        raise TransformError(
            f"data is {kind} (datacontenttype {event.datacontenttype!r}); "
            "a jq program on data needs JSON data"
        )


class JqStep(TransformStep):
    type_name = "jq"
    Config = JqConfig
    main_field: ClassVar[str] = "program"

    def __init__(
        self, config: JqConfig, *, name: str | None = None, context: StepContext | None = None
    ) -> None:
        super().__init__(config, name=name, context=context)
        self.cfg = config
        self.program = compile_field(config.program, config.engine, "program")
        self._on_data = config.apply_to == "data"

    def apply(self, event: CloudEvent) -> list[CloudEvent]:
        if self._on_data:
            require_json_data(event)
            return [with_data(event, d) for d in self.program.all(event.data)]
        outs = self.program.all(to_event_form(event))
        events = []
        for n, out in enumerate(outs):
            try:
                events.append(from_event_form(out))
            except InvalidEventError as exc:
                raise TransformError(
                    f"output {n} of an apply_to: event program is not a valid CloudEvent: {exc}"
                ) from exc
        return events

    def fusable(self) -> FusablePart | None:
        if not self._on_data:
            return None
        return FusablePart("data", self.cfg.engine, self.cfg.program)


PLUGIN = JqStep.as_plugin(
    "a jq program over the event's data (or the whole event): 0..n events out",
    example="""\
- jq: '{id: .order_id, total}'            # short form: the program
- jq:
    program: '.items[]'                   # 0..n outputs -> 0..n events
    apply_to: data                        # data (default) | event
    engine: jaq                           # jaq (default) | jq (libjq)
""",
)
