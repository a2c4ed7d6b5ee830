"""The ``topic`` sink: produce events to Kafka (binary CloudEvents by default).

An example is ``PLUGIN``'s ``example`` (shown in docs/reference.md#sink-topic with
every key, and loaded by tests/unit/test_reference.py).

A ``route`` step's choice (the ``routetopic`` extension) wins over ``topic``;
the extension is removed before producing.  The pipeline marks its input
offsets done only after this sink returned, and it returns only after the
broker acknowledged every record (acks=all), so a crash re-sends rather than
loses; the deterministic ids let consumers dedup (ARCHITECTURE.md section 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.errors import BrokerUnavailableError, PermanentError, is_retriable
from eventpipe.plugin import PluginConfig
from eventpipe.publisher import PublishBatchError
from eventpipe.settings import TopicSpec
from eventpipe.sink import (
    BeforeCommit,
    DeliveryItem,
    PipelineSink,
    SinkPlugin,
    SinkUnavailableError,
)
from eventpipe.topics import TopicName
from eventpipe.transforms.steps import ROUTE_EXTENSION


class TopicSinkConfig(PluginConfig):
    topic: TopicName | None = Field(
        None, description="default topic; a route step may choose another"
    )
    partitions: int | None = Field(
        None, ge=1, description="of a topic it creates; default kafka.default_partitions"
    )
    mode: Literal["binary", "structured"] = Field(
        "binary", description="Kafka encoding: ce_* headers (binary) or one JSON value"
    )
    create_routed_topics: bool = Field(
        True, description="create a topic a route step chose when it is missing"
    )


class NoTopicError(PermanentError):
    """An event has no routed topic and the sink names none."""


def _strip_route(event: CloudEvent) -> CloudEvent:
    if ROUTE_EXTENSION not in event.extensions:
        return event
    ext = {k: v for k, v in event.extensions.items() if k != ROUTE_EXTENSION}
    out = CloudEvent(
        id=event.id,
        source=event.source,
        type=event.type,
        data=event.data,
        subject=event.subject,
        time=event.time,
        datacontenttype=event.datacontenttype,
        dataschema=event.dataschema,
        extensions=ext,
        specversion=event.specversion,
        validate=False,
    )
    return out


class TopicSink(PipelineSink):
    type_name = "topic"
    Config = TopicSinkConfig

    def __init__(self, config: TopicSinkConfig, *, name: str | None = None) -> None:
        super().__init__(config, name=name)
        self.cfg = config
        self._known: set[str] = set()

    def topics(self) -> list[str]:
        return [self.cfg.topic] if self.cfg.topic else []

    @classmethod
    def pipeline_problems(cls, config: Any, *, routed: bool) -> list[tuple[str, str]]:
        if config.topic is not None or routed:
            return []
        return [
            (
                "topic",
                "required unless a `route` step comes before the sinks: without it every "
                "event is dead-lettered for want of a topic (`name:` names the sink, "
                "not the topic: write `topic: {topic: NAME}`)",
            )
        ]

    async def _ensure(self, names: set[str]) -> None:
        missing = names - self._known
        if not missing:
            return
        res = self.need_context()
        if self.cfg.create_routed_topics:
            await res.admin.ensure_topics(
                [TopicSpec(name=t, partitions=self.cfg.partitions) for t in sorted(missing)]
            )
        self._known |= missing

    async def deliver(
        self, items: Sequence[DeliveryItem], *, before_commit: BeforeCommit | None = None
    ) -> dict[int, BaseException]:
        res = self.need_context()
        failed: dict[int, BaseException] = {}
        by_topic: dict[str, tuple[list[KafkaMessage], list[str], list[int]]] = {}
        mode = self.cfg.mode
        default = self.cfg.topic
        for it in items:
            for ev in it.events:
                routed = ev.extensions.get(ROUTE_EXTENSION)
                topic = str(routed) if routed is not None else default
                if topic is None:
                    failed[it.index] = NoTopicError(
                        f"sink {self.label}: the event has no routed topic and the sink "
                        "sets no `topic:`"
                    )
                    continue
                msgs, ids, owners = by_topic.setdefault(topic, ([], [], []))
                msgs.append(to_kafka(_strip_route(ev) if routed is not None else ev, mode=mode))
                ids.append(ev.id)
                owners.append(it.index)
        try:
            await self._ensure(set(by_topic))
        except BrokerUnavailableError as exc:
            raise SinkUnavailableError(f"sink {self.label}: {exc}") from exc
        total = sum(len(m) for m, _, _ in by_topic.values())
        n_failed_retriable = 0
        for topic, (msgs, ids, owners) in by_topic.items():
            try:
                await res.publisher.publish_messages(topic, msgs, ids, via=f"sink:{self.label}")
            except PublishBatchError as exc:
                for i, err in exc.failed.items():
                    failed.setdefault(owners[i], err)
                    if is_retriable(err):
                        n_failed_retriable += 1
            except BrokerUnavailableError as exc:
                raise SinkUnavailableError(f"sink {self.label}: {exc}") from exc
        if total and n_failed_retriable == total:
            raise SinkUnavailableError(f"sink {self.label}: the broker acknowledged nothing")
        return failed


PLUGIN = SinkPlugin.of(
    TopicSink,
    "produces events to a Kafka topic (or the one a route step chose)",
    example="""\
- topic:
    topic: orders.enriched            # used unless a `route` step chose another
    partitions: 6                     # when the pipeline creates it
    mode: binary                      # binary (default) | structured
""",
)


__all__ = ["NoTopicError", "TopicSink", "TopicSinkConfig"]
