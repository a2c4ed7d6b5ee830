"""Compatibility levels: which earlier versions a new schema is checked against, and
in which direction.

- BACKWARD: the new schema reads data written with the latest version;
- FORWARD: the latest version reads data written with the new schema;
- FULL: both; ``*_TRANSITIVE``: against every live version, not only the latest;
- NONE: no check.

Messages follow Confluent's verbose form: the reasons, then
``{oldSchemaVersion: N}``, ``{oldSchema: '...'}``, ``{compatibility: 'LEVEL'}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import avro_compat, json_compat
from .errors import InvalidCompatibilityLevel
from .models import COMPATIBILITY_LEVELS, Incompatibility
from .schemas import AvroSchema, JsonSchema, ParsedSchema


def normalize_level(level: object) -> str:
    if not isinstance(level, str) or level.upper() not in COMPATIBILITY_LEVELS:
        raise InvalidCompatibilityLevel(level)
    return level.upper()


def can_read(
    reader: ParsedSchema, writer: ParsedSchema, *, reader_label: str, writer_label: str
) -> list[Incompatibility]:
    """Why ``reader`` cannot read data written with ``writer`` (empty: it can)."""
    if isinstance(reader, AvroSchema) and isinstance(writer, AvroSchema):
        return avro_compat.check(
            reader, writer, reader_label=reader_label, writer_label=writer_label
        )
    if isinstance(reader, JsonSchema) and isinstance(writer, JsonSchema):
        return json_compat.check(
            reader, writer, reader_label=reader_label, writer_label=writer_label
        )
    old, new = (writer, reader) if reader_label == "new" else (reader, writer)
    return [
        Incompatibility(
            "SCHEMA_TYPE_CHANGED",
            "/",
            f"The schema type changed from {old.schema_type} to {new.schema_type}",
        )
    ]


def pair_issues(level: str, new: ParsedSchema, old: ParsedSchema) -> list[Incompatibility]:
    out: list[Incompatibility] = []
    if level.startswith(("BACKWARD", "FULL")):
        out += can_read(new, old, reader_label="new", writer_label="old")
    if level.startswith(("FORWARD", "FULL")):
        seen = {str(i) for i in out}
        out += [
            i
            for i in can_read(old, new, reader_label="old", writer_label="new")
            if str(i) not in seen
        ]
    return out


def check(level: str, new: ParsedSchema, previous: Sequence[tuple[int, ParsedSchema]]) -> list[str]:
    """Messages why ``new`` breaks ``level`` against ``previous`` ((version, schema),
    oldest first); empty when it is compatible.  Stops at the first version it breaks,
    newest first, as Confluent does."""
    level = normalize_level(level)
    if level == "NONE" or not previous:
        return []
    targets = previous if level.endswith("_TRANSITIVE") else previous[-1:]
    for version, old in reversed(targets):
        issues = pair_issues(level, new, old)
        if issues:
            return [str(i) for i in issues] + [
                f"{{oldSchemaVersion: {version}}}",
                f"{{oldSchema: '{old.text}'}}",
                f"{{compatibility: '{level}'}}",
            ]
    return []
