"""Parsing, stored text, fingerprints (dedup) and references; malformed schemas
give a clear 42201 error."""

from __future__ import annotations

import json

import pytest

from eventpipe.schema_registry.errors import InvalidSchema
from eventpipe.schema_registry.models import RegisteredSchema, Schema, SchemaReference
from eventpipe.schema_registry.schemas import (
    AvroSchema,
    JsonSchema,
    ResolvedReference,
    parse,
)

ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "com.acme",
    "fields": [{"name": "id", "type": "long"}],
}


def test_avro_text_is_compact_json_in_the_given_key_order() -> None:
    parsed = parse("AVRO", json.dumps(ORDER, indent=4))
    assert parsed.text == (
        '{"type":"record","name":"Order","namespace":"com.acme",'
        '"fields":[{"name":"id","type":"long"}]}'
    )
    assert isinstance(parsed, AvroSchema)
    assert parsed.record_name == "com.acme.Order"


def test_same_schema_written_differently_has_one_fingerprint() -> None:
    a = parse("AVRO", json.dumps(ORDER))
    reordered = {
        "fields": [{"type": {"type": "long"}, "name": "id"}],
        "namespace": "com.acme",
        "name": "Order",
        "type": "record",
    }
    b = parse("AVRO", json.dumps(reordered, indent=2))
    assert a.fingerprint == b.fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"fields": [{"name": "id", "type": "long", "default": 0}]},
        {"fields": [{"name": "id", "type": "int"}]},
        {"doc": "orders"},
    ],
)
def test_a_real_difference_changes_the_fingerprint(change: dict[str, object]) -> None:
    assert (
        parse("AVRO", json.dumps(ORDER)).fingerprint
        != parse("AVRO", json.dumps({**ORDER, **change})).fingerprint
    )


def test_type_and_references_are_part_of_the_fingerprint() -> None:
    addr = parse("AVRO", json.dumps({"type": "record", "name": "A", "fields": []}))
    text = json.dumps({"type": "record", "name": "B", "fields": [{"name": "a", "type": "A"}]})
    v1 = parse("AVRO", text, (ResolvedReference(SchemaReference("A", "a", 1), addr),))
    v2 = parse("AVRO", text, (ResolvedReference(SchemaReference("A", "a", 2), addr),))
    assert v1.fingerprint != v2.fingerprint
    assert parse("AVRO", '"string"').fingerprint != parse("JSON", '{"type":"string"}').fingerprint


def test_avro_reference_supplies_a_named_type() -> None:
    addr = parse(
        "AVRO",
        json.dumps(
            {
                "type": "record",
                "name": "Address",
                "namespace": "com.acme",
                "fields": [{"name": "city", "type": "string"}],
            }
        ),
    )
    order = json.dumps(
        {
            "type": "record",
            "name": "Order",
            "namespace": "com.acme",
            "fields": [{"name": "to", "type": "Address"}],
        }
    )
    with pytest.raises(InvalidSchema, match=r"unknown type 'com\.acme\.Address'.*reference"):
        parse("AVRO", order)
    ref = ResolvedReference(SchemaReference("com.acme.Address", "address-value", 1), addr)
    parsed = parse("AVRO", order, (ref,))
    assert isinstance(parsed, AvroSchema)
    assert "com.acme.Address" in parsed.names
    assert parsed.reference_list == (SchemaReference("com.acme.Address", "address-value", 1),)


def test_json_reference_resolves_a_ref_by_name() -> None:
    addr = parse(
        "JSON",
        json.dumps(
            {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        ),
    )
    order = json.dumps({"type": "object", "properties": {"to": {"$ref": "address.json"}}})
    with pytest.raises(InvalidSchema, match=r"address\.json"):
        parse("JSON", order)
    ref = ResolvedReference(SchemaReference("address.json", "a", 1), addr)
    parsed = parse("JSON", order, (ref,))
    assert isinstance(parsed, JsonSchema)
    assert parsed.resolved["properties"]["to"]["required"] == ["city"]
    validator = parsed.validator()
    assert validator.is_valid({"to": {"city": "Oslo"}})
    assert not validator.is_valid({"to": {}})


def test_json_schema_drafts_7_and_2020_12() -> None:
    d7 = parse(
        "JSON",
        json.dumps(
            {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "array",
                "items": [{"type": "string"}],
            }
        ),
    )
    d2020 = parse(
        "JSON",
        json.dumps(
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "array",
                "prefixItems": [{"type": "string"}],
                "title": "Pair",
            }
        ),
    )
    assert isinstance(d7, JsonSchema) and isinstance(d2020, JsonSchema)
    assert not d7.validator().is_valid([1])
    assert not d2020.validator().is_valid([1])
    assert d2020.record_name == "Pair"


def test_references_must_be_of_the_same_type() -> None:
    addr = parse("JSON", '{"type":"object"}')
    with pytest.raises(InvalidSchema, match="is a JSON schema, not AVRO"):
        parse("AVRO", '"string"', (ResolvedReference(SchemaReference("X", "x", 1), addr),))


@pytest.mark.parametrize(
    ("schema_type", "text", "message"),
    [
        ("AVRO", "", "the schema is empty"),
        ("AVRO", "{not json", "not valid JSON"),
        ("AVRO", '{"type": "record", "name": "X"}', "needs a 'fields' array"),
        ("AVRO", '{"type": "record", "name": "1X", "fields": []}', "not a valid Avro name"),
        (
            "AVRO",
            '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "int"},'
            ' {"name": "a", "type": "int"}]}',
            "field 'a' appears twice",
        ),
        (
            "AVRO",
            '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "int",'
            ' "default": "x"}]}',
            "Default value",
        ),
        (
            "AVRO",
            '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "Nope"}]}',
            "unknown type 'Nope'",
        ),
        ("AVRO", '["int", "int"]', "holds 'int' twice"),
        ("AVRO", '{"type": "enum", "name": "E", "symbols": ["A", "A"]}', "unique"),
        ("AVRO", '{"type": "fixed", "name": "F", "size": -1}', "non-negative integer"),
        ("AVRO", '{"type": "array"}', "needs 'items'"),
        ("JSON", '{"type": "objekt"}', "#/type"),
        ("JSON", "[1, 2]", "must be an object or a boolean"),
        ("JSON", '{"type": "string", "pattern": "(("}', "regex"),
        ("PROTOBUF", 'syntax = "proto3";', "not supported"),
    ],
)
def test_malformed_schemas_raise_invalid_schema(schema_type: str, text: str, message: str) -> None:
    with pytest.raises(InvalidSchema) as info:
        parse(schema_type, text)
    assert info.value.error_code == 42201
    assert info.value.status == 422
    assert message in str(info.value)


def test_model_dicts_follow_confluent_shapes() -> None:
    avro = RegisteredSchema("s", 1, 5, Schema('"string"'))
    assert avro.to_dict() == {"subject": "s", "version": 1, "id": 5, "schema": '"string"'}
    js = RegisteredSchema("s", 2, 6, Schema("{}", "JSON", (SchemaReference("a", "b", 3),)))
    assert js.to_dict() == {
        "subject": "s",
        "version": 2,
        "id": 6,
        "schemaType": "JSON",
        "references": [{"name": "a", "subject": "b", "version": 3}],
        "schema": "{}",
    }
    assert RegisteredSchema.from_dict(js.to_dict()) == js
    assert Schema.from_dict({"schema": "x"}).schema_type == "AVRO"
