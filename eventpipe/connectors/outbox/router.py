"""Outbox row -> Kafka record (Debezium's outbox event router, CloudEvents flavour).

* topic: ``topic`` template over the row (``outbox.event.{aggregatetype}`` by
  default, like Debezium's ``route.topic.replacement``);
* key: ``aggregateid`` (the CloudEvent's ``partitionkey``);
* the CloudEvent: ``id``, ``type``, ``payload`` as data, the ``ce_*`` entries of
  ``headers`` as its other attributes, ``created_at`` as time unless ``ce_time``;
* other ``headers`` entries: plain Kafka headers;
* with ``tombstone_on_empty_payload``, a row without payload becomes a tombstone
  (key, no value) for log-compacted topics.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from eventpipe.envelope import CloudEvent, parse_time
from eventpipe.envelope.event import CORE_ATTRIBUTES
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.errors import InvalidEventError
from eventpipe.topics import is_topic_name

from .api import CE_PREFIX

Out = tuple[str, KafkaMessage, str]
ROUTE_FIELDS = ("aggregatetype", "type", "name")


class OutboxRouter:
    def __init__(
        self,
        *,
        name: str,
        topic_template: str,
        source_uri: str,
        tombstone_on_empty_payload: bool = False,
        mode: Literal["binary", "structured"] = "binary",
    ) -> None:
        self.name = name
        self.topic_template = topic_template
        self.source_uri = source_uri
        self.tombstones = tombstone_on_empty_payload
        self.mode: Literal["binary", "structured"] = mode

    def topic(self, aggregatetype: str, type_: str) -> str:
        topic = self.topic_template.format(aggregatetype=aggregatetype, type=type_, name=self.name)
        if not is_topic_name(topic):
            raise InvalidEventError(
                "aggregatetype", f"routes to {topic!r}, which is not a valid topic name"
            )
        return topic

    def route(self, row: Mapping[str, Any]) -> Out:
        event_id = str(row["id"])
        aggregate_id = str(row["aggregateid"])
        topic = self.topic(str(row["aggregatetype"]), str(row["type"]))
        payload = row.get("payload")
        if payload is None and self.tombstones:
            return (topic, KafkaMessage(aggregate_id.encode("utf-8"), None, []), event_id)
        headers: Mapping[str, Any] = row.get("headers") or {}
        attrs: dict[str, Any] = {}
        extensions: dict[str, str | int | bool] = {}
        plain: list[tuple[str, bytes]] = []
        for k, v in headers.items():
            if k.startswith(CE_PREFIX):
                name = k[len(CE_PREFIX) :]
                if name in CORE_ATTRIBUTES:
                    attrs[name] = v
                else:
                    extensions[name] = str(v)
            else:
                plain.append((k, str(v).encode("utf-8")))
        extensions["partitionkey"] = aggregate_id
        created = row.get("created_at")
        when = (
            parse_time(attrs["time"])
            if "time" in attrs
            else created
            if isinstance(created, datetime)
            else parse_time(created)
            if isinstance(created, str)
            else None
        )
        event = CloudEvent(
            id=event_id,
            source=attrs.get("source") or self.source_uri,
            type=str(row["type"]),
            subject=attrs.get("subject"),
            time=when,
            dataschema=attrs.get("dataschema"),
            datacontenttype=attrs.get("datacontenttype")
            or (None if payload is None else "application/json"),
            data=payload,
            extensions=extensions,
        )
        msg = to_kafka(event, mode=self.mode)
        msg.headers.extend(plain)
        return (topic, msg, event_id)
