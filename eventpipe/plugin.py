"""The plugin surface: how a source, a sink, a step or a pipeline enters the service.

A **plugin** is a plain value, :class:`Plugin`: its kind, the name a YAML file uses
(``type``), its typed config model, a factory and a one-line summary::

    PLUGIN = Plugin("sink", "postgres", PostgresSinkConfig, PostgresSink.build, "rows ...")

Each feature module ends with such a value; nothing registers itself on import.
The roof (``eventpipe.service.catalog``) lists the built-in plugins explicitly and
hands the sinks and sources to whoever builds them, through the
:class:`~eventpipe.context.Context` (:class:`Catalog`).

What a factory builds for a source, a sink or a pipeline is a **component**
(:class:`Component`): ``start()``, an idempotent ``stop()``, ``health()`` ("ok" or
why not; ``/readyz`` shows it) and ``status()`` (a
:class:`~eventpipe.status.ComponentStatus` snapshot: state, rates, lag, dead
letters, last error).  A component whose work stops on an error it cannot handle
calls :meth:`Component.report_failure`; the service then shuts down and exits 3 so
that its supervisor restarts it.  Steps have no lifecycle: the transforms package
builds them (:mod:`eventpipe.transforms.catalog`).
"""

from __future__ import annotations

import builtins
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from aiohttp import web

    from eventpipe.context import Context
    from eventpipe.preflight import Problem, Reach
    from eventpipe.sink import SinkPlugin
    from eventpipe.status import ComponentStatus

log = logging.getLogger(__name__)

Kind = Literal["source", "sink", "step", "pipeline"]
C = TypeVar("C", bound=BaseModel)
X = TypeVar("X")
T = TypeVar("T", covariant=True)


class PluginConfig(BaseModel):
    """Base of every plugin's config: unknown keys are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SourceName = Annotated[str, Field(min_length=1, description="unique among the sources")]


class SourceConfig(PluginConfig):
    """Base of a ``sources:`` entry: ``type`` picks the source plugin (the entries
    are parsed once, as a union discriminated by it) and ``name`` names the
    instance.  Each source's entry model narrows ``type`` to its ``Literal``."""

    type: str
    name: SourceName


@dataclass(frozen=True)
class Plugin(Generic[C, X, T]):
    """One plugin: ``build(config, name, context)`` makes an instance.

    ``X`` is what the factory is given: the service's
    :class:`~eventpipe.context.Context` for sources, sinks and pipelines, a
    :class:`~eventpipe.transforms.base.StepContext` for steps.  ``check`` is the
    plugin's start-time check against the live systems (a missing table or topic),
    as ``(field, message)`` problems relative to the plugin's config.
    ``shorthand`` (steps) turns a YAML shorthand into the config mapping and says
    whether it was one (``{jq: '.data'}`` is ``{jq: {program: '.data'}}``).
    ``example`` is YAML of one or more entries as they stand in their list
    (``sources:``, a pipeline's ``sinks:`` or ``steps:``, ``pipelines:``), each
    item starting with ``- ``: docs/reference.md shows it, and
    tests/unit/test_reference.py loads it through the config loader."""

    kind: Kind
    type: str
    config: builtins.type[C]
    build: Callable[[C, str, X], T]
    summary: str
    check: Callable[[C, Reach], Awaitable[list[Problem]]] | None = None
    shorthand: Callable[[Any], tuple[Any, bool]] | None = None
    example: str = ""


P = TypeVar("P", bound="Plugin[Any, Any, Any]")


def by_type(plugins: Iterable[P]) -> dict[str, P]:
    """``{type: plugin}``; a type listed twice is a programming error."""
    out: dict[str, P] = {}
    for p in plugins:
        if p.type in out:
            raise ValueError(f"{p.kind} type {p.type!r} is listed twice")
        out[p.type] = p
    return out


@dataclass(frozen=True)
class Catalog:
    """The plugins a service was composed with, by type (built by the roof)."""

    sources: Mapping[str, Plugin[Any, Context, Component]] = field(default_factory=dict)
    sinks: Mapping[str, SinkPlugin[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """An HTTP route a component serves; the roof installs it on the service's app.

    Routes of several components that share ``method``, ``path`` and ``name`` are one
    aiohttp route: each component answers the requests whose path parameter
    ``match[0]`` equals ``match[1]`` (``POST /webhooks/{name}``, one per source)."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    name: str | None = None
    match: tuple[str, str] | None = None


# --------------------------------------------------------------- components
class Component(ABC):
    """A long-running part of the service: a source, a sink, a pipeline."""

    kind: ClassVar[Kind]
    type_name: ClassVar[str] = "?"
    name: str = ""
    on_failure: Callable[[Component, BaseException], None] | None = None

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None:
        """Idempotent: stopping a stopped (or never started) component does nothing."""

    @abstractmethod
    def status(self) -> ComponentStatus:
        """A snapshot of what the component is doing now (cheap: no I/O)."""

    def routes(self) -> list[Route]:
        """The HTTP routes this component serves (none by default)."""
        return []

    def health(self) -> str:
        """``"ok"``, or why the component cannot do its work (``/readyz``)."""
        st = self.status()
        if st.state != "failed":
            return "ok"
        return f"failed: {st.last_error.message}" if st.last_error else "failed"

    @property
    def check_name(self) -> str:
        """The key of this component's health in ``/readyz``."""
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        """How logs and errors name it: ``pipeline orders``, ``kafka source legacy``."""
        if self.type_name in ("?", self.kind):
            return f"{self.kind} {self.name}"
        return f"{self.type_name} {self.kind} {self.name}"

    def report_failure(self, exc: BaseException) -> None:
        """The component's work stopped on ``exc``: log it and tell the service,
        which shuts down and exits non-zero (a component never dies silently)."""
        log.error("%s stopped on an unexpected error", self.label, exc_info=exc)
        if self.on_failure is not None:
            self.on_failure(self, exc)


class Configured:
    """A plugin instance made from a config: its config, its name, its logger."""

    type_name: ClassVar[str] = "?"
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: PluginConfig, *, name: str | None = None) -> None:
        self.config = config
        self.name = name or self.type_name
        self.log = logging.getLogger(f"eventpipe.{self.type_name}.{self.name}")


class Source(Configured, Component):
    """Turns the outside world into CloudEvents on topics; advances its own position
    only after the broker acknowledged (ARCHITECTURE.md section 5)."""

    kind: ClassVar[Kind] = "source"

    def position(self) -> Any:
        """Where the source would resume (slot LSN, offsets, spool id)."""
        return None


__all__ = [
    "Catalog",
    "Component",
    "Configured",
    "Kind",
    "Plugin",
    "PluginConfig",
    "Route",
    "Source",
    "SourceConfig",
    "SourceName",
    "by_type",
]
