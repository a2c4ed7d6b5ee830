"""Wire format framing, Avro / JSON payloads, subject naming strategies."""

from __future__ import annotations

import json

import pytest

from eventpipe.errors import ConfigError, is_retriable
from eventpipe.schema_registry import naming
from eventpipe.schema_registry.models import SchemaReference
from eventpipe.schema_registry.schemas import AvroSchema, ResolvedReference, parse
from eventpipe.schema_registry.wire import (
    SerializationError,
    WireFormatError,
    avro_decode,
    avro_encode,
    frame,
    json_decode,
    json_encode,
    schema_id_of,
    unframe,
)

ORDER_V1 = {
    "type": "record",
    "name": "Order",
    "namespace": "com.acme",
    "fields": [{"name": "id", "type": "long"}, {"name": "qty", "type": "int"}],
}
ORDER_V2 = {
    **ORDER_V1,
    "fields": [*ORDER_V1["fields"], {"name": "note", "type": "string", "default": "none"}],
}


def avro(doc: object) -> AvroSchema:
    parsed = parse("AVRO", json.dumps(doc))
    assert isinstance(parsed, AvroSchema)
    return parsed


def test_frame_is_magic_byte_then_big_endian_id() -> None:
    assert frame(258, b"xy") == b"\x00\x00\x00\x01\x02xy"
    assert unframe(b"\x00\x00\x00\x01\x02xy") == (258, b"xy")
    assert schema_id_of(frame(2**32 - 1, b"")) == 2**32 - 1


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"\x00\x00\x01", "too short"), (b"\x01\x00\x00\x00\x01", "unknown magic byte 1")],
)
def test_unframe_rejects_other_bytes(data: bytes, message: str) -> None:
    with pytest.raises(WireFormatError, match=message) as info:
        unframe(data)
    assert not is_retriable(info.value)


def test_frame_rejects_ids_over_four_bytes() -> None:
    with pytest.raises(SerializationError):
        frame(2**32, b"")


def test_avro_round_trip_is_schemaless_binary() -> None:
    schema = avro(ORDER_V1)
    payload = avro_encode(schema, {"id": 7, "qty": 2})
    assert payload == b"\x0e\x04"  # zig-zag varints, no container header
    assert avro_decode(payload, schema) == {"id": 7, "qty": 2}


def test_avro_decode_resolves_to_a_reader_schema() -> None:
    payload = avro_encode(avro(ORDER_V1), {"id": 1, "qty": 3})
    assert avro_decode(payload, avro(ORDER_V1), avro(ORDER_V2)) == {
        "id": 1,
        "qty": 3,
        "note": "none",
    }


def test_avro_encode_names_the_bad_value() -> None:
    with pytest.raises(SerializationError, match="Avro schema"):
        avro_encode(avro(ORDER_V1), {"id": "seven", "qty": 1})


def test_avro_decode_rejects_truncated_or_long_payloads() -> None:
    schema = avro(ORDER_V1)
    with pytest.raises(WireFormatError):
        avro_decode(b"\x0e", schema)
    with pytest.raises(WireFormatError, match="left after"):
        avro_decode(b"\x0e\x04\x00", schema)


def test_json_payload_round_trip() -> None:
    assert json_decode(json_encode({"a": [1, 2]})) == {"a": [1, 2]}
    with pytest.raises(WireFormatError):
        json_decode(b"{nope")
    with pytest.raises(SerializationError):
        json_encode({"a": object()})


def test_subject_naming_strategies() -> None:
    assert naming.topic_name_strategy("orders", False, "com.acme.Order") == "orders-value"
    assert naming.topic_name_strategy("orders", True, None) == "orders-key"
    assert naming.record_name_strategy("orders", False, "com.acme.Order") == "com.acme.Order"
    assert naming.topic_record_name_strategy("orders", False, "com.acme.Order") == (
        "orders-com.acme.Order"
    )
    with pytest.raises(naming.SubjectNameError, match="RecordNameStrategy needs a named"):
        naming.record_name_strategy("orders", False, None)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("TopicNameStrategy", naming.topic_name_strategy),
        ("io.confluent.kafka.serializers.subject.RecordNameStrategy", naming.record_name_strategy),
        ("topic_record", naming.topic_record_name_strategy),
        ("record", naming.record_name_strategy),
    ],
)
def test_strategy_by_name(name: str, expected: naming.SubjectNameStrategy) -> None:
    assert naming.strategy(name) is expected


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="TopicNameStrategy"):
        naming.strategy("ByColour")


def test_bytes_from_confluent_serializer_decode_with_ours() -> None:
    """confluent-kafka's AvroSerializer (against its in-memory registry) writes exactly
    the frame + schemaless Avro that unframe / avro_decode read."""
    from confluent_kafka.schema_registry._sync.mock_schema_registry_client import (
        MockSchemaRegistryClient,
    )
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = MockSchemaRegistryClient({"url": "mock://unit"})
    ser = AvroSerializer(client, json.dumps(ORDER_V1))
    data = ser({"id": 42, "qty": 5}, SerializationContext("orders", MessageField.VALUE))
    assert data is not None
    schema_id, payload = unframe(data)
    assert schema_id == client.get_latest_version("orders-value").schema_id
    assert avro_decode(payload, avro(ORDER_V1)) == {"id": 42, "qty": 5}


def test_top_level_union_of_a_referenced_type_round_trips() -> None:
    node = avro(
        {
            "type": "record",
            "name": "Node",
            "namespace": "x",
            "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "x.Node"]}],
        }
    )
    ref = ResolvedReference(SchemaReference("x.Node", "node-value", 1), node)
    union = parse("AVRO", '["null", "x.Node"]', (ref,))
    assert isinstance(union, AvroSchema)
    value = {"v": 1, "next": {"v": 2, "next": None}}
    assert avro_decode(avro_encode(union, value), union) == value
    assert avro_decode(avro_encode(union, None), union) is None
