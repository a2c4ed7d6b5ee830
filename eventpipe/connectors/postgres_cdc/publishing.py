"""Publishing a batch of records in order, with dead letters, before anything advances.

Records are grouped by topic (order within a topic is kept; Kafka orders nothing
across topics), each group goes through :meth:`Publisher.publish_messages` (all
sent, then the acknowledgements awaited), groups concurrently.  A record the
broker refuses for good (a class says so: too large, not authorized;
:func:`~eventpipe.errors.is_bad_record`) becomes a dead letter; any retriable
failure raises, and the caller reads and sends the batch again.  A failure no
class explains is a bug: it raises too, and the reader stops (state failed)
without advancing the slot past the record, which is never dead-lettered.  A
dead letter keeps the record's value (:class:`DeadLetterWriter` keeps one too large
for the broker in Postgres).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from eventpipe import metrics
from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.errors import error_class_name, is_bad_record, is_retriable
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import PublishBatchError, Publisher
from eventpipe.settings import TopicSpec

Out = tuple[str, KafkaMessage, str]  # topic, record, event id

log = logging.getLogger(__name__)


class RecordPublisher:
    def __init__(
        self,
        *,
        name: str,
        publisher: Publisher,
        admin: TopicAdmin,
        dlq: DeadLetterWriter,
        topic_partitions: int | None = None,
    ) -> None:
        self.name = name
        self.publisher = publisher
        self.admin = admin
        self.dlq = dlq
        self.topic_partitions = topic_partitions
        self._known: set[str] = set()

    async def ensure_topics(self, topics: Iterable[str]) -> None:
        new = [t for t in topics if t not in self._known]
        if not new:
            return
        await self.admin.ensure_topics(
            [TopicSpec(name=t, partitions=self.topic_partitions) for t in new]
        )
        self._known.update(new)

    async def publish(self, outs: list[Out], dead: list[DeadLetter] | None = None) -> int:
        """Every record and dead letter acknowledged, or an exception.  Returns how many
        of ``outs`` are on their topics (the others the broker refused for good are
        dead letters now)."""
        dead = list(dead or ())
        refused = 0
        groups: dict[str, tuple[list[KafkaMessage], list[str]]] = {}
        for topic, msg, event_id in outs:
            g = groups.get(topic)
            if g is None:
                g = groups[topic] = ([], [])
            g[0].append(msg)
            g[1].append(event_id)
        if groups:
            await self.ensure_topics(groups)
            results = await asyncio.gather(
                *(
                    self.publisher.publish_messages(t, m, i, via=f"source:{self.name}")
                    for t, (m, i) in groups.items()
                ),
                return_exceptions=True,
            )
            retry: BaseException | None = None
            for (topic, (msgs, ids)), res in zip(groups.items(), results, strict=True):
                if isinstance(res, PublishBatchError):
                    for idx, err in res.failed.items():
                        if is_retriable(err):
                            retry = err
                            continue
                        if not is_bad_record(err):  # no class explains it: a bug
                            log.error(
                                "source %s: publishing event %s to %s failed with an error "
                                "no class explains (%s); it is not dead-lettered and the "
                                "source stops without passing it: fix the cause and restart",
                                self.name,
                                ids[idx],
                                topic,
                                error_class_name(err),
                            )
                            raise err
                        m = msgs[idx]
                        refused += 1
                        dead.append(
                            DeadLetter.from_exception(
                                err,
                                key=m.key,
                                value=m.value,
                                headers=m.headers,
                                pipeline=self.name,
                                stage="source",
                                origin=Origin(topic=topic),
                            )
                        )
                elif isinstance(res, BaseException):
                    raise res
            if retry is not None:
                raise retry
        if dead:
            await self.ensure_topics([self.dlq.topic])
            await self.dlq.write(dead)
            metrics.CDC_DEAD_LETTERS.labels(source=self.name).inc(len(dead))
        return len(outs) - refused
