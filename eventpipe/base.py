"""The three roles every connector and transform plays (STYLE.md habit 1).

* :class:`Source` turns the outside world into CloudEvents: ``start`` /
  ``stop`` / ``position``.
* :class:`Sink` delivers CloudEvents: ``write_batch`` / ``flush`` / ``close``.
  A partial failure raises :class:`BatchError` naming the failed records.
* :class:`Step` transforms one event into 0..n events (``process``), with a
  batch form that steps may override where batching pays.

Each concrete class declares a pydantic ``Config`` model and registers itself
under the name a YAML file uses (``@steps.register("jq")``).
"""

from __future__ import annotations

import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from eventpipe.registry import Registry

if TYPE_CHECKING:
    from eventpipe.envelope import CloudEvent
    from eventpipe.preflight import Reach


class PluginConfig(BaseModel):
    """Base of every connector / step config: unknown keys are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Named:
    type_name: ClassVar[str] = "?"
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: PluginConfig, *, name: str | None = None) -> None:
        self.config = config
        self.name = name or self.type_name
        self.log = logging.getLogger(f"eventpipe.{self.type_name}.{self.name}")


class Source(_Named, ABC):
    """Produces CloudEvents into topics.  Advances its own position only after the
    broker acknowledged (ARCHITECTURE.md section 5)."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None:
        """Idempotent."""

    def position(self) -> Any:
        """Where the source would resume (slot LSN, offsets, spool id)."""
        return None


class BatchError(Exception):
    """Some records of a batch failed: ``failed`` maps batch index -> exception.
    Only those go to the dead-letter topic (Redpanda Connect's BatchError)."""

    def __init__(self, failed: dict[int, BaseException]) -> None:
        self.failed = failed
        super().__init__(f"{len(failed)} record(s) of the batch failed")


class Sink(_Named, ABC):
    _open = False

    @classmethod
    def pipeline_problems(cls, config: Any, *, routed: bool) -> list[tuple[str, str]]:
        """Load-time problems of this sink in a pipeline, as ``(field, message)``;
        ``routed``: a ``route`` step comes before the sinks."""
        return []

    @classmethod
    async def preflight(cls, config: Any, reach: Reach) -> list[tuple[str, str]]:
        """Start-time problems that would fail every record (a missing table), found
        against the live systems before anything starts, as ``(field, message)``.
        What ``reach`` does not hold is not checked (eventpipe.preflight)."""
        return []

    async def start(self) -> None:
        self._open = True

    @abstractmethod
    async def write_batch(self, events: Sequence[CloudEvent]) -> None:
        """Write all events or raise; :class:`BatchError` names failed ones."""

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self._open = False

    async def __aenter__(self) -> Sink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        if self._open:
            warnings.warn(f"sink {self.name!r} was not closed", ResourceWarning, stacklevel=1)


class Step(_Named, ABC):
    """A transform: one event in, 0..n events out.  Errors raised are permanent
    for that event unless their class says otherwise."""

    @abstractmethod
    def process(self, event: CloudEvent) -> list[CloudEvent]: ...

    def process_batch(self, events: Sequence[CloudEvent]) -> list[list[CloudEvent]]:
        return [self.process(e) for e in events]


sources: Registry[Source] = Registry("source")
sinks: Registry[Sink] = Registry("sink")
steps: Registry[Step] = Registry("step")
