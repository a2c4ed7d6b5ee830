"""JSON Schema compatibility: content models open and closed, types, enums, limits,
combinators, drafts 7 and 2020-12."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eventpipe.schema_registry import compat
from eventpipe.schema_registry.models import SchemaReference
from eventpipe.schema_registry.schemas import ParsedSchema, ResolvedReference, parse

D7 = "http://json-schema.org/draft-07/schema#"
D2020 = "https://json-schema.org/draft/2020-12/schema"


def js(obj: Any, refs: tuple[ResolvedReference, ...] = ()) -> ParsedSchema:
    return parse("JSON", json.dumps(obj), refs)


def obj(
    props: dict[str, Any],
    *,
    closed: bool = False,
    required: list[str] | None = None,
    draft: str = D7,
    **extra: Any,
) -> ParsedSchema:
    doc: dict[str, Any] = {"$schema": draft, "type": "object", "properties": props, **extra}
    if closed:
        doc["additionalProperties"] = False
    if required:
        doc["required"] = required
    return js(doc)


def check(level: str, new: ParsedSchema, *old: ParsedSchema) -> list[str]:
    return compat.check(level, new, [(i + 1, s) for i, s in enumerate(old)])


def error_types(messages: list[str]) -> set[str]:
    return {m.split("'")[1] for m in messages if m.startswith("{errorType:")}


A = {"a": {"type": "string"}}
AB = {"a": {"type": "string"}, "b": {"type": "integer"}}

CASES: list[tuple[str, ParsedSchema, ParsedSchema, dict[str, str | None]]] = [
    (
        "property added, open content model",
        obj(A),
        obj(AB),
        {
            "BACKWARD": "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
            "FORWARD": None,
            "FULL": "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
            "NONE": None,
        },
    ),
    (
        "property added, closed content model",
        obj(A, closed=True),
        obj(AB, closed=True),
        {
            "BACKWARD": None,
            "FORWARD": "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
            "FULL": "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
        },
    ),
    (
        "required property added, closed content model",
        obj(A, closed=True),
        obj(AB, closed=True, required=["b"]),
        {"BACKWARD": "REQUIRED_PROPERTY_ADDED"},
    ),
    (
        "property removed, open content model",
        obj(AB),
        obj(A),
        {"BACKWARD": None, "FORWARD": "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL"},
    ),
    (
        "property removed, closed content model",
        obj(AB, closed=True),
        obj(A, closed=True),
        {
            "BACKWARD": "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
            "FORWARD": None,
            "FULL": "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
        },
    ),
    (
        "property removed, partially open model that covers it",
        obj(AB, additionalProperties={"type": "integer"}),
        obj(A, additionalProperties={"type": "integer"}),
        {"BACKWARD": None},
    ),
    (
        "property removed, partially open model that does not cover it",
        obj(AB, additionalProperties={"type": "string"}),
        obj(A, additionalProperties={"type": "string"}),
        {"BACKWARD": "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"},
    ),
    (
        "required removed",
        obj(AB, required=["a", "b"]),
        obj(AB, required=["a"]),
        {"BACKWARD": None, "FORWARD": "REQUIRED_PROPERTY_ADDED"},
    ),
    (
        "content model closed",
        obj(A),
        obj(A, closed=True),
        {"BACKWARD": "ADDITIONAL_PROPERTIES_REMOVED", "FORWARD": None},
    ),
    (
        "type widened integer -> number",
        obj({"n": {"type": "integer"}}),
        obj({"n": {"type": "number"}}),
        {"BACKWARD": None, "FORWARD": "TYPE_NARROWED"},
    ),
    (
        "type changed string -> integer",
        obj({"n": {"type": "string"}}),
        obj({"n": {"type": "integer"}}),
        {"BACKWARD": "TYPE_CHANGED", "FORWARD": "TYPE_CHANGED"},
    ),
    (
        "type gains null",
        obj({"n": {"type": "string"}}),
        obj({"n": {"type": ["string", "null"]}}),
        {"BACKWARD": None, "FORWARD": "TYPE_NARROWED"},
    ),
    (
        "enum extended",
        obj({"s": {"enum": ["A", "B"]}}),
        obj({"s": {"enum": ["A", "B", "C"]}}),
        {"BACKWARD": None, "FORWARD": "ENUM_ARRAY_NARROWED"},
    ),
    (
        "maxLength decreased",
        obj({"s": {"type": "string", "maxLength": 10}}),
        obj({"s": {"type": "string", "maxLength": 5}}),
        {"BACKWARD": "MAX_LENGTH_DECREASED", "FORWARD": None},
    ),
    (
        "minimum added",
        obj({"n": {"type": "integer"}}),
        obj({"n": {"type": "integer", "minimum": 0}}),
        {"BACKWARD": "MINIMUM_ADDED", "FORWARD": None},
    ),
    (
        "pattern added",
        obj({"s": {"type": "string"}}),
        obj({"s": {"type": "string", "pattern": "^x"}}),
        {"BACKWARD": "PATTERN_ADDED", "FORWARD": None},
    ),
    (
        "anyOf branch added",
        obj({"v": {"anyOf": [{"type": "string"}]}}),
        obj({"v": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}),
        {"BACKWARD": None, "FORWARD": "COMBINED_TYPE_SUBSCHEMAS_CHANGED"},
    ),
    (
        "array items narrowed",
        obj({"xs": {"type": "array", "items": {"type": "number"}}}),
        obj({"xs": {"type": "array", "items": {"type": "integer"}}}),
        {"BACKWARD": "TYPE_NARROWED", "FORWARD": None},
    ),
    (
        "2020-12 tuple position narrowed",
        obj(
            {"t": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]}},
            draft=D2020,
        ),
        obj(
            {"t": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}},
            draft=D2020,
        ),
        {"BACKWARD": "TYPE_NARROWED"},
    ),
    (
        "draft 7 $ref to definitions",
        js(
            {
                "$schema": D7,
                "type": "object",
                "properties": {"p": {"$ref": "#/definitions/p"}},
                "definitions": {
                    "p": {"type": "object", "properties": A, "additionalProperties": False}
                },
            }
        ),
        js(
            {
                "$schema": D7,
                "type": "object",
                "properties": {"p": {"$ref": "#/definitions/p"}},
                "definitions": {
                    "p": {
                        "type": "object",
                        "properties": AB,
                        "additionalProperties": False,
                        "required": ["b"],
                    }
                },
            }
        ),
        {
            "BACKWARD": "REQUIRED_PROPERTY_ADDED",
            "FORWARD": "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
        },
    ),
]


@pytest.mark.parametrize(
    ("case", "old", "new", "level", "expected"),
    [
        pytest.param(case, old, new, level, expected, id=f"{case}-{level}")
        for case, old, new, levels in CASES
        for level, expected in levels.items()
    ],
)
def test_pairwise_cases(
    case: str, old: ParsedSchema, new: ParsedSchema, level: str, expected: str | None
) -> None:
    messages = check(level, new, old)
    if expected is None:
        assert messages == []
    else:
        assert expected in error_types(messages), messages
        assert f"{{compatibility: '{level}'}}" in messages


def test_paths_point_into_nested_objects() -> None:
    old = obj({"addr": {"type": "object", "properties": {"zip": {"type": "string"}}}})
    new = obj({"addr": {"type": "object", "properties": {"zip": {"type": "integer"}}}})
    messages = check("BACKWARD", new, old)
    assert "#/properties/addr/properties/zip" in messages[0]


def test_transitive_json_levels() -> None:
    v1 = obj(A, closed=True)
    v2 = obj(AB, closed=True)
    v3 = obj(AB, closed=True, required=["b"])  # v3 reads v2? no: b not required in v2
    assert "REQUIRED_PROPERTY_ADDED" in error_types(check("BACKWARD", v3, v1, v2))
    # a forward-only break against v1 alone: v1 (closed, only a) cannot read v2's b
    assert check("FORWARD", v2, v2) == []
    assert "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL" in error_types(
        check("FORWARD_TRANSITIVE", v2, v1, v2)
    )
    assert check("FULL", v2, v1, v2) == []
    assert check("FULL_TRANSITIVE", v2, v1, v2) != []
    assert check("BACKWARD_TRANSITIVE", v2, v1, v2) == []


def test_references_are_compared_through() -> None:
    addr1 = js({"type": "object", "properties": {"city": {"type": "string"}}})
    addr2 = js({"type": "object", "properties": {"city": {"type": "integer"}}})
    order = {"$schema": D7, "type": "object", "properties": {"to": {"$ref": "address.json"}}}
    old = js(order, (ResolvedReference(SchemaReference("address.json", "addr", 1), addr1),))
    new = js(order, (ResolvedReference(SchemaReference("address.json", "addr", 2), addr2),))
    assert "TYPE_CHANGED" in error_types(check("BACKWARD", new, old))
    assert check("BACKWARD", old, old) == []


def test_true_schema_accepts_anything_and_false_nothing() -> None:
    assert check("BACKWARD", js(True), obj(AB)) == []
    assert "SCHEMA_NARROWED" in error_types(check("BACKWARD", js(False), obj(AB)))


def test_recursive_reference_terminates() -> None:
    tree = {
        "$schema": D2020,
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    }
    assert check("FULL", js(tree), js(tree)) == []
