"""What pipeline sinks share.

A pipeline hands a sink the outputs of each consumed record as a
:class:`DeliveryItem` (its batch ``index`` and where it was read), so a sink
that writes transactionally can store the consumed offsets with its rows
(ARCHITECTURE.md section 5).

Failures are told apart by class (ARCHITECTURE.md section 7):

* :class:`SinkUnavailableError` (retriable): the destination is unreachable or
  says it is overloaded (connection refused, timeout, HTTP 429/502/503/504,
  broker down).  The pipeline holds the records and backs off; they do not use
  up attempts, so a sink that is down never dead-letters everything.  This holds
  per record too: a record whose own request met an unavailable endpoint is held,
  not charged an attempt.
* :class:`HeldForOrderError`: the record was not sent because an earlier record
  with the same ordering key is not delivered yet; it goes after that one and
  uses up no attempt.
* any other retriable error for one record (HTTP 500, a deadlock): the record
  is retried up to ``retry.max_attempts``, then dead-lettered.
* a permanent error (constraint violation, HTTP 4xx): dead-lettered at once.

``deliver`` returns the failed records by index; it raises
:class:`SinkUnavailableError` when the sink as a whole could not write.  The
circuit breaker counts a write as failed when unavailability dominated it: at
least half of the records it tried (those held for order are not tried) failed
as unavailable.
"""

from __future__ import annotations

import uuid
import warnings
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from eventpipe.breaker import CircuitBreaker
from eventpipe.envelope import CloudEvent
from eventpipe.errors import RetriableError
from eventpipe.kafka.incarnation import Mark
from eventpipe.plugin import Component, Configured, Kind, Plugin, PluginConfig
from eventpipe.status import Activity, ComponentStatus, State

if TYPE_CHECKING:
    from eventpipe.context import Context
    from eventpipe.preflight import Reach

C = TypeVar("C", bound=PluginConfig)

BeforeCommit = Callable[[dict[int, BaseException]], Awaitable[None]]
"""Called by transactional sinks with their permanent failures before they commit,
so those records are dead-lettered before their offsets are marked as done."""


class SinkUnavailableError(RetriableError):
    """The destination cannot take writes now; ``retry_after`` (seconds) when it said."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HeldForOrderError(RetriableError):
    """Not sent: an earlier record with the same ordering key is not delivered yet."""


class BatchError(Exception):
    """Some records of a batch failed: ``failed`` maps batch index -> exception.
    Only those go to the dead-letter topic (Redpanda Connect's BatchError)."""

    def __init__(self, failed: dict[int, BaseException]) -> None:
        self.failed = failed
        super().__init__(f"{len(failed)} record(s) of the batch failed")


@dataclass(slots=True)
class DeliveryItem:
    """The outputs of one consumed record (0..n events)."""

    index: int
    events: list[CloudEvent]
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    extra: dict[str, object] = field(default_factory=dict)
    key: bytes | None = None  # the consumed record's Kafka key (sinks that keep order)


async def _no_hook(failed: dict[int, BaseException]) -> None:
    return None


class Sink(Configured, Component):
    """Delivers CloudEvents: ``write_batch`` / ``flush`` / ``close`` (STYLE.md habit
    1).  A partial failure raises :class:`BatchError` naming the failed records."""

    kind: ClassVar[Kind] = "sink"
    _open = False

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

    async def stop(self) -> None:
        await self.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        if self._open:
            warnings.warn(f"sink {self.name!r} was not closed", ResourceWarning, stacklevel=1)


class PipelineSink(Sink):
    """A sink a pipeline drives.  ``exactly_once`` sinks keep consumed offsets with
    their writes and skip records at or below them.

    ``build(config, name, ctx)`` is the factory a :class:`SinkPlugin` names; the
    pipeline then calls :meth:`bind` with its own name.  ``activity`` is what the
    pipeline counts for this sink's :meth:`status` (events delivered, dead
    letters, the last error)."""

    exactly_once: ClassVar[bool] = False

    def __init__(self, config: PluginConfig, *, name: str | None = None) -> None:
        super().__init__(config, name=name)
        self.breaker = CircuitBreaker()
        self.topic_ids = {}
        self.activity = Activity()

    @classmethod
    def build(cls, config: Any, name: str, ctx: Context | None) -> Self:
        sink = cls(config, name=name)
        sink.ctx = ctx
        return sink

    @classmethod
    def pipeline_problems(cls, config: Any, *, routed: bool) -> list[tuple[str, str]]:
        """Load-time problems of this sink in a pipeline, as ``(field, message)``;
        ``routed``: a ``route`` step comes before the sinks."""
        return []

    def status(self) -> ComponentStatus:
        breaker = self.breaker.state
        state: State = "running" if self._open else "stopped"
        if self._open and breaker == "open":
            state = "paused"  # held back until a probe may go
        return self.activity.status(
            name=self.label,
            kind=self.kind,
            type=self.type_name,
            state=state,
            details={"circuit": breaker, "exactly_once": self.exactly_once},
        )

    pipeline: str = ""
    ctx: Context | None = None

    def bind(self, pipeline: str, ctx: Context) -> None:
        """Called once by the pipeline before ``start``: the sink's marks and
        metrics are per pipeline, and it may use the service's pool and producer."""
        self.pipeline = pipeline
        self.ctx = ctx

    def need_context(self) -> Context:
        if self.ctx is None:
            raise RuntimeError(f"sink {self.name!r} was not bound to a pipeline (call bind())")
        return self.ctx

    def topics(self) -> list[str]:
        """Topics this sink writes to, created when the pipeline starts."""
        return []

    topic_ids: dict[str, uuid.UUID]
    """``exactly_once`` sinks: the id of each source topic's incarnation, set by the
    pipeline once it checked the marks; written with new marks."""

    async def marks(self, topics: Sequence[str]) -> dict[tuple[str, int], Mark]:
        """``exactly_once`` sinks: the stored high-water mark per ``(topic, partition)``
        of ``topics`` (the last offset written, and the topic id it was written
        under; partitions never written are absent).  The pipeline checks that each
        belongs to the topic there now, then starts reading a partition no later than
        the lowest mark + 1, so a sink never skips a record it did not write.  Raises
        :class:`SinkUnavailableError` when the marks cannot be read now."""
        return {}

    async def reset_marks(self, tps: Sequence[tuple[str, int]]) -> None:
        """``exactly_once`` sinks: drop the marks of ``tps`` (their topic was created
        again; ``on_topic_reset: reset``), so every record of it is written."""

    @property
    def label(self) -> str:
        """How logs and metrics name this sink: ``<pipeline>/<sink name>``."""
        return f"{self.pipeline}/{self.name}" if self.pipeline else self.name

    async def deliver(
        self, items: Sequence[DeliveryItem], *, before_commit: BeforeCommit | None = None
    ) -> dict[int, BaseException]:
        raise NotImplementedError

    async def write_batch(self, events: Sequence[CloudEvent]) -> None:
        """The plain Sink API: every event in one item each, no offsets."""
        failed = await self.deliver([DeliveryItem(i, [e]) for i, e in enumerate(events)])
        if failed:
            raise BatchError(failed)


def retry_after_of(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class SinkPlugin(Plugin[C, "Context | None", PipelineSink]):
    """A sink's plugin value.  ``pipeline_problems(config, routed)``: its load-time
    problems within a pipeline (``routed``: a ``route`` step comes before the
    sinks), as ``(field, message)``."""

    pipeline_problems: Callable[..., list[tuple[str, str]]] | None = None

    @staticmethod
    def of(sink: type[PipelineSink], summary: str, example: str = "") -> SinkPlugin[PluginConfig]:
        """The plugin of a :class:`PipelineSink` class: its ``type_name``, ``Config``,
        ``build``, ``preflight`` and ``pipeline_problems``."""
        return SinkPlugin(
            "sink",
            sink.type_name,
            sink.Config,
            sink.build,
            summary,
            check=sink.preflight,
            example=example,
            pipeline_problems=sink.pipeline_problems,
        )
