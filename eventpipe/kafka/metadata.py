"""Metadata v10 and v12 (the versions that carry topic ids), which aiokafka does not
define: a topic deleted and created again under its name gets a new id (KIP-516),
so the id tells incarnations of a topic apart.  Apache Kafka answers them since
2.8, Tansu too; an older broker negotiates neither and :func:`topic_ids_request`
is then not sendable (:data:`UNSUPPORTED`)."""

from __future__ import annotations

import uuid
from io import BytesIO
from typing import Any

from aiokafka.errors import IncompatibleBrokerVersion
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    AbstractType,
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION
UNSUPPORTED = (IncompatibleBrokerVersion, NotImplementedError)
"""What aiokafka raises when the broker negotiates no Metadata version defined here."""


class Uuid(AbstractType[uuid.UUID | None]):
    """Kafka's UUID: 16 bytes, all zeros for "none"."""

    @classmethod
    def encode(cls, value: uuid.UUID | None) -> bytes:
        return (value or uuid.UUID(int=0)).bytes

    @classmethod
    def decode(cls, data: BytesIO) -> uuid.UUID | None:
        raw = data.read(16)
        if len(raw) != 16:
            raise ValueError("Buffer underrun decoding UUID")
        value = uuid.UUID(bytes=raw)
        return None if value.int == 0 else value


def _topics() -> CompactArray:
    partition = CompactArray(
        ("error_code", Int16),
        ("partition_index", Int32),
        ("leader_id", Int32),
        ("leader_epoch", Int32),
        ("replica_nodes", CompactArray(Int32)),
        ("isr_nodes", CompactArray(Int32)),
        ("offline_replicas", CompactArray(Int32)),
        ("tags", TaggedFields),
    )
    return CompactArray(
        ("error_code", Int16),
        ("name", CompactString("utf-8")),
        ("topic_id", Uuid),
        ("is_internal", Boolean),
        ("partitions", partition),
        ("topic_authorized_operations", Int32),
        ("tags", TaggedFields),
    )


_BROKERS = CompactArray(
    ("node_id", Int32),
    ("host", CompactString("utf-8")),
    ("port", Int32),
    ("rack", CompactString("utf-8")),
    ("tags", TaggedFields),
)


_RESPONSE_HEAD = (
    ("throttle_time_ms", Int32),
    ("brokers", _BROKERS),
    ("cluster_id", CompactString("utf-8")),
    ("controller_id", Int32),
    ("topics", _topics()),
)


class MetadataResponse_v10(Response):
    API_KEY = 3
    API_VERSION = 10
    SCHEMA = Schema(
        *_RESPONSE_HEAD, ("cluster_authorized_operations", Int32), ("tags", TaggedFields)
    )


class MetadataResponse_v12(Response):
    API_KEY = 3
    API_VERSION = 12
    SCHEMA = Schema(*_RESPONSE_HEAD, ("tags", TaggedFields))


_REQUEST_TOPICS = CompactArray(
    ("topic_id", Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields)
)


class MetadataRequest_v10(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 10
    RESPONSE_TYPE = MetadataResponse_v10
    SCHEMA = Schema(
        ("topics", _REQUEST_TOPICS),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class MetadataRequest_v12(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = MetadataResponse_v12
    SCHEMA = Schema(
        ("topics", _REQUEST_TOPICS),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class TopicIdsRequest(Request[MetadataRequest_v10 | MetadataRequest_v12]):
    """Metadata of ``topics`` by name, never creating them."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics

    def build(
        self, request_struct_class: type[MetadataRequest_v10 | MetadataRequest_v12]
    ) -> MetadataRequest_v10 | MetadataRequest_v12:
        topics: list[tuple[None, str, dict[int, bytes]]] = [(None, t, {}) for t in self.topics]
        if request_struct_class is MetadataRequest_v10:
            return MetadataRequest_v10(topics, False, False, False, {})
        return MetadataRequest_v12(topics, False, False, {})


def topic_ids_of(response: Any) -> dict[str, uuid.UUID | None]:
    """name -> topic id (None: the broker gave none) of the topics that exist (a topic
    just created may answer with an error such as LEADER_NOT_AVAILABLE and its id)."""
    out: dict[str, uuid.UUID | None] = {}
    for t in response.to_object()["topics"]:
        if t["name"] and (t["error_code"] != UNKNOWN_TOPIC or t["topic_id"] is not None):
            out[t["name"]] = t["topic_id"]
    return out
