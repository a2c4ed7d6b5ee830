"""What every transform step shares: building from a YAML value, and error naming.

A step's YAML value is either its full config mapping or a shorthand for its
main field (``{jq: '.data'}`` is ``{jq: {program: '.data'}}``).
:func:`build_step` validates the config (pydantic), then constructs the step,
which compiles its program or schema; every problem comes back at once, each
with its path (``steps[2].jq.program``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeAlias

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from eventpipe.config_keys import error_message
from eventpipe.errors import ConfigError
from eventpipe.plugin import Configured, Plugin, PluginConfig

from .errors import StepError
from .event_form import distinct_ids
from .jq_engine import EngineName, JqCompileError, Program, compile_program

if TYPE_CHECKING:
    from eventpipe.envelope import CloudEvent

    from .fusion import FusablePart

SchemaVersion = int | Literal["latest"]
SchemaResolver = Callable[[str, SchemaVersion], tuple[str, str]]
"""``resolve_schema(subject, version) -> (schema_type, schema_text)``.

``schema_type`` is the registry's ``JSON`` or ``AVRO``; ``version`` is an int or
``"latest"``.  Called at config load, never per event.  Raise a
``RetriableError`` when the registry is unreachable (the chain lets it out so
the caller can retry), anything else when the subject or version is unknown.
"""


@dataclass(frozen=True, slots=True)
class StepContext:
    """What the builder of a chain passes to the steps it builds."""

    resolve_schema: SchemaResolver | None = None


class Step(Configured, ABC):
    """A transform: one event in, 0..n events out.  Errors raised are permanent
    for that event unless their class says otherwise.  No lifecycle: steps are
    built when a pipeline's config is checked and live as long as it."""

    @classmethod
    def build(cls, config: Any, name: str, context: StepContext | None) -> Self:
        return cls(config, name=name)

    @abstractmethod
    def process(self, event: CloudEvent) -> list[CloudEvent]: ...

    def process_batch(self, events: Sequence[CloudEvent]) -> list[list[CloudEvent]]:
        return [self.process(e) for e in events]


StepPlugin: TypeAlias = Plugin[Any, "StepContext | None", Step]
"""A step's plugin value (:mod:`eventpipe.transforms.catalog` lists the built-in ones)."""


class TransformStep(Step):
    """Base of the steps in this package.

    Subclasses implement :meth:`apply` (one event -> its outputs, errors raised
    as :class:`StepError`) and name their ``main_field`` for the shorthand.
    """

    main_field: ClassVar[str] = ""

    def __init__(
        self,
        config: PluginConfig,
        *,
        name: str | None = None,
        context: StepContext | None = None,
    ) -> None:
        super().__init__(config, name=name)
        self.context = context or StepContext()

    # -------------------------------------------------------------- building
    @classmethod
    def build(cls, config: Any, name: str, context: StepContext | None) -> Self:
        return cls(config, name=name, context=context)

    @classmethod
    def as_plugin(cls, summary: str, example: str = "") -> StepPlugin:
        """The step's plugin value: its ``type_name``, ``Config``, factory and shorthand."""
        return Plugin(
            "step",
            cls.type_name,
            cls.Config,
            cls.build,
            summary,
            shorthand=cls.expand_shorthand,
            example=example,
        )

    @classmethod
    def expand_shorthand(cls, raw: Any) -> tuple[Any, bool]:
        """(the full config mapping, whether ``raw`` was a shorthand)."""
        if isinstance(raw, Mapping):
            return dict(raw), False
        return {cls.main_field: raw}, True

    @classmethod
    def from_yaml(
        cls, raw: Any, *, name: str | None = None, context: StepContext | None = None
    ) -> TransformStep:
        """Build from a YAML value; raises ConfigError with paths relative to the step."""
        step, problems = build_step(cls.as_plugin(""), raw, path="", name=name, context=context)
        if step is None:
            raise ConfigError(problems)
        assert isinstance(step, TransformStep)
        return step

    # -------------------------------------------------------------- running
    @abstractmethod
    def apply(self, event: CloudEvent) -> list[CloudEvent]:
        """One event -> its outputs; ids of several outputs are left as they are."""

    def process(self, event: CloudEvent) -> list[CloudEvent]:
        try:
            return distinct_ids(self.apply(event))
        except StepError as exc:
            if exc.step is None:
                exc.step = self.name
            raise

    def fusable(self) -> FusablePart | None:
        """The step's meaning as a jq fragment, when a chain may fuse it with its
        neighbours (see :mod:`eventpipe.transforms.fusion`)."""
        return None


def compile_field(source: str, engine: EngineName, field: str) -> Program:
    """Compile a config field's jq program; a failure is a ConfigError naming the field."""
    try:
        return compile_program(source, engine)
    except JqCompileError as exc:
        raise ConfigError([(field, exc.message)]) from exc


def split_path(path: str) -> list[str | int]:
    """``fields.subject`` -> ["fields", "subject"]; ``paths[2]`` -> ["paths", 2]."""
    loc: list[str | int] = []
    for m in re.finditer(r"([^.\[\]]+)|\[(\d+)\]", path):
        loc.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
    return loc


def join_path(prefix: str, loc: tuple[str | int, ...] | list[str | int]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def build_step(
    plugin: StepPlugin,
    raw: Any,
    *,
    path: str,
    name: str | None = None,
    context: StepContext | None = None,
) -> tuple[Step | None, list[tuple[str, str]]]:
    """Validate ``raw`` against the plugin's config model and build the step.

    Returns (step, []) or (None, problems); each problem's path is ``path`` plus
    the field, the field a shorthand fills being left out when ``raw`` was one.
    """
    shorthand = False
    main: str | int = ""
    if plugin.shorthand is not None:
        data, shorthand = plugin.shorthand(raw)
        if shorthand:
            main = next(iter(data))
    elif raw is None:
        data = {}
    elif isinstance(raw, Mapping):
        data = dict(raw)
    else:
        return None, [(path, f"expected a mapping of options, got {type(raw).__name__}")]

    def where(loc: tuple[str | int, ...] | list[str | int]) -> str:
        loc = list(loc)
        if shorthand and loc and loc[0] == main:
            loc = loc[1:]
        return join_path(path, loc)

    try:
        config = plugin.config.model_validate(data)
    except ValidationError as exc:
        return None, [(where(e["loc"]), _pydantic_message(e, plugin.config)) for e in exc.errors()]
    try:
        step = plugin.build(config, name or plugin.type, context)
    except ConfigError as exc:
        problems = []
        for p, msg in exc.problems:
            problems.append((where(split_path(p)), msg))
        return None, problems
    return step, []


def _pydantic_message(err: ErrorDetails, model: type[BaseModel]) -> str:
    # "Value error, <ours>" -> "<ours>": our validators' messages read better bare.
    return error_message(err, model).removeprefix("Value error, ")


__all__ = [
    "SchemaResolver",
    "SchemaVersion",
    "Step",
    "StepContext",
    "StepPlugin",
    "TransformStep",
    "build_step",
    "compile_field",
    "join_path",
]
