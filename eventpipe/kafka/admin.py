"""Topic admin: create what a config names, a cached "does this topic exist", and
topic ids (which incarnation of a topic this is)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable

from aiokafka import errors as ke
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventpipe.errors import ConfigError
from eventpipe.kafka.client import client_kwargs, start_client, wrap_kafka_error
from eventpipe.kafka.metadata import UNSUPPORTED, TopicIdsRequest, topic_ids_of
from eventpipe.settings import KafkaSettings, TopicSpec


class TopicAdmin:
    """One admin client; ``exists`` answers from a cache refreshed at most every
    ``ttl`` seconds, and at once on a miss (a topic created elsewhere shows up)."""

    def __init__(self, kafka: KafkaSettings, *, ttl: float = 10.0) -> None:
        self.kafka = kafka
        self.ttl = ttl
        self._client: AIOKafkaAdminClient | None = None
        self._topics: set[str] = set()
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._client is not None:
            return
        client = AIOKafkaAdminClient(**client_kwargs(self.kafka))
        await start_client(client, self.kafka, "start the admin client")
        self._client = client

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> TopicAdmin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def list_topics(self) -> set[str]:
        await self.start()
        assert self._client is not None
        try:
            topics = set(await self._client.list_topics())
        except ke.KafkaError as exc:
            raise wrap_kafka_error(exc, "list topics") from exc
        self._topics = topics
        self._fetched_at = time.monotonic()
        return topics

    async def topic_ids(self, topics: Iterable[str]) -> dict[str, uuid.UUID | None]:
        """Each existing topic of ``topics`` -> its topic id (None when the broker does
        not give ids: Metadata below v10, or all zeros).  Absent: no such topic."""
        names = sorted(set(topics))
        if not names:
            return {}
        await self.start()
        assert self._client is not None
        client = self._client._client
        try:
            response = await client.send(client.get_random_node(), TopicIdsRequest(names))
        except UNSUPPORTED:
            return dict.fromkeys(set(await self.list_topics()) & set(names))
        except ke.KafkaError as exc:
            raise wrap_kafka_error(exc, "topic metadata") from exc
        return topic_ids_of(response)

    async def exists(self, topic: str) -> bool:
        if topic in self._topics and time.monotonic() - self._fetched_at < self.ttl:
            return True
        async with self._lock:
            return topic in await self.list_topics()

    async def ensure_topics(self, specs: Iterable[TopicSpec | str]) -> list[str]:
        """Create missing topics; returns the names created.  Safe to call twice."""
        wanted = [TopicSpec(name=s) if isinstance(s, str) else s for s in specs]
        existing = await self.list_topics()
        new = [
            NewTopic(
                s.name,
                s.partitions or self.kafka.default_partitions,
                s.replication_factor or self.kafka.replication_factor,
                topic_configs=dict(s.config),
            )
            for s in wanted
            if s.name not in existing
        ]
        if not new:
            return []
        assert self._client is not None
        try:
            await self._client.create_topics(new)
        except ke.TopicAlreadyExistsError:
            pass
        except ke.KafkaError as exc:
            raise wrap_kafka_error(exc, "create topics") from exc
        await self.list_topics()
        return [t.name for t in new]


def missing_topic_message(topic: str) -> str:
    return (
        f"topic {topic!r} does not exist; list it under `topics:` or set kafka.auto_create_topics"
    )


async def prepare_source_topics(
    admin: TopicAdmin, kafka: KafkaSettings, *, topic: str, dlq_topic: str | None, where: str
) -> None:
    """A source's topics when it starts: its dead-letter topic is created, as a
    pipeline's is (it is eventpipe's own); the topic it writes to is created only
    with ``kafka.auto_create_topics``, else it must exist (ConfigError at ``where``)."""
    if dlq_topic is not None:
        await admin.ensure_topics([dlq_topic])
    if kafka.auto_create_topics:
        await admin.ensure_topics([topic])
    elif not await admin.exists(topic):
        raise ConfigError([(f"{where}.topic", missing_topic_message(topic))])
