"""What a conformance profile is: the little a plugin supplies so that the generic
cases run against it (Redpanda Connect's shared integration tests).

A profile knows how to make a valid config against the test's real broker,
PostgreSQL or HTTP receiver, how to observe the plugin's effect there (rows in a
table, records on a topic, requests received) and how to make one bad record or
input.  It knows nothing of the cases: those are the same for every plugin and
use it only through the plugin surface (``Plugin.build(config, name, ctx)``,
``start`` / ``stop`` / ``health`` / ``status`` / ``routes``, a sink's ``deliver``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aiohttp.test_utils import TestClient

from eventpipe.envelope import CloudEvent
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.plugin import Component
from eventpipe.settings import Settings, TopicSpec

SMALL_RECORDS = 8192
"""A producer limit (``kafka.max_request_size``) under which a profile's bad record
is too large: the test's own producer keeps 1 MiB, so it can still make it."""

Delivery = Literal["exactly_once", "idempotent", "at_least_once"]
"""What a redelivery of the same batch (a crash before the offsets were committed)
does at the destination: ``exactly_once``, nothing, because the sink keeps the
consumed offsets with its writes (``PipelineSink.exactly_once``); ``idempotent``,
nothing, because the destination keys its writes on the event id;
``at_least_once``, the same effects once more, each carrying the same event id and
dedup key (CloudEvent id, ``Idempotency-Key``), so that consumers deduplicate."""


@dataclass(frozen=True)
class Effect:
    """One thing a sink did at its destination, as a consumer sees it."""

    event_id: str  # the CloudEvent id it carries
    dedup_key: str  # what a consumer deduplicates on: row key, ce id, Idempotency-Key
    payload: Any  # what it holds; a re-send holds the same


class Profile:
    """A profile instance serves one test: ``name`` is unique to it."""

    plugin_type: ClassVar[str]
    variant: ClassVar[str] = ""  # a second profile of one plugin (another mode)
    max_record_bytes: ClassVar[int | None] = None  # the Context's kafka.max_request_size

    def __init__(self, settings: Settings, name: str) -> None:
        self.base = settings
        self.name = name

    @classmethod
    def case_id(cls) -> str:
        return f"{cls.plugin_type}-{cls.variant}" if cls.variant else cls.plugin_type

    def settings(self) -> Settings:
        """The settings of the Context the plugin is built with."""
        if self.max_record_bytes is None:
            return self.base
        kafka = self.base.kafka.model_copy(update={"max_request_size": self.max_record_bytes})
        return self.base.model_copy(update={"kafka": kafka})

    async def setup(self) -> dict[str, Any]:
        """Make what the plugin needs; return its config (below)."""
        raise NotImplementedError

    async def teardown(self) -> None:
        """Drop what ``setup`` made that would outlive the test (slots, rows)."""

    async def create_topics(self, *topics: str | TopicSpec) -> None:
        async with TopicAdmin(self.base.kafka) as admin:
            await admin.ensure_topics(topics)


class SinkProfile(Profile):
    delivery: ClassVar[Delivery]

    async def setup(self) -> dict[str, Any]:
        """Make the destination; return the sink's config as a pipeline's YAML holds it."""
        raise NotImplementedError

    def event(self, i: int) -> CloudEvent:
        """The ``i``-th good event of a test (the same ``i``, the same event)."""
        return CloudEvent.create(
            "conformance.item", "/conformance", {"n": i, "key": f"k{i}"}, id=f"{self.name}-{i}"
        )

    def bad_event(self) -> CloudEvent:
        """An event the destination refuses for itself alone (a permanent error)."""
        raise NotImplementedError

    async def effects(self, expected: int) -> list[Effect]:
        """Everything the sink did so far; waits for ``expected`` effects where they
        arrive later than ``deliver`` returns (records read back from a topic)."""
        raise NotImplementedError


@dataclass
class Running:
    """A started source, its routes served as the service serves them."""

    source: Component
    client: TestClient


class SourceProfile(Profile):
    input_while_stopped: ClassVar[bool] = True
    """False when input cannot wait for the source (a webhook: the provider re-sends
    until it is answered 2xx), so the restart case makes it once the new one runs."""

    topic: str = ""  # where the events go (set by setup)

    async def setup(self) -> dict[str, Any]:
        """Make what the source reads; return its ``sources:`` entry without
        ``type`` and ``name``.  Sets :attr:`topic`."""
        raise NotImplementedError

    async def ready(self, source: Component) -> None:
        """Until input made now is sure to be captured (a CDC slot exists)."""

    async def make_input(self, running: Running | None, labels: Sequence[str]) -> None:
        """One input per label, in order (``running`` is None while no source runs)."""
        raise NotImplementedError

    def label_of(self, event: CloudEvent) -> str:
        """The label of the input ``event`` came from."""
        raise NotImplementedError

    async def make_bad_input(self, running: Running) -> str | None:
        """One input the source must dead-letter; the dead-letter topic it goes to,
        or None when the source has no such input."""
        return None
