"""The values the registry API speaks about: schemas, references, registrations,
and the names of schema types, compatibility levels and modes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AVRO = "AVRO"
JSON = "JSON"
SCHEMA_TYPES: tuple[str, ...] = (JSON, AVRO)

COMPATIBILITY_LEVELS: tuple[str, ...] = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
DEFAULT_COMPATIBILITY = "BACKWARD"

MODES: tuple[str, ...] = ("READWRITE", "READONLY", "IMPORT")
DEFAULT_MODE = "READWRITE"

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
PREFIX = "/schema-registry"  # where the service mounts the registry's routes


@dataclass(frozen=True, slots=True)
class SchemaReference:
    """``name`` is how the referring schema names it (an Avro full name, or the
    ``$ref`` of a JSON Schema); ``subject`` / ``version`` where it is registered."""

    name: str
    subject: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "subject": self.subject, "version": self.version}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SchemaReference:
        return cls(str(d["name"]), str(d["subject"]), int(d["version"]))


@dataclass(frozen=True, slots=True)
class Schema:
    """A schema as text, with its type and references (not yet registered)."""

    schema: str
    schema_type: str = AVRO
    references: tuple[SchemaReference, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The request body of register / lookup / compatibility calls."""
        body: dict[str, Any] = {"schema": self.schema}
        if self.schema_type != AVRO:
            body["schemaType"] = self.schema_type
        if self.references:
            body["references"] = [r.to_dict() for r in self.references]
        return body

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schema:
        return cls(
            schema=d["schema"],
            schema_type=d.get("schemaType") or AVRO,
            references=tuple(SchemaReference.from_dict(r) for r in d.get("references") or ()),
        )


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """A schema as registered: its global ``id`` and its ``version`` in ``subject``."""

    subject: str
    version: int
    id: int
    schema: Schema

    def to_dict(self) -> dict[str, Any]:
        """Confluent's shape: ``schemaType`` is omitted for AVRO, ``references`` when empty."""
        body: dict[str, Any] = {
            "subject": self.subject,
            "version": self.version,
            "id": self.id,
        }
        if self.schema.schema_type != AVRO:
            body["schemaType"] = self.schema.schema_type
        if self.schema.references:
            body["references"] = [r.to_dict() for r in self.schema.references]
        body["schema"] = self.schema.schema
        return body

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegisteredSchema:
        return cls(
            subject=d["subject"],
            version=int(d["version"]),
            id=int(d["id"]),
            schema=Schema.from_dict(d),
        )


@dataclass(frozen=True, slots=True)
class CompatibilityResult:
    is_compatible: bool
    messages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One reason a schema cannot read data of another, printed the way Confluent's
    verbose compatibility messages are."""

    error_type: str
    path: str
    description: str
    additional_info: str | None = None

    def __str__(self) -> str:
        out = f"{{errorType:'{self.error_type}', description:'{self.description}'"
        if self.additional_info is not None:
            out += f", additionalInfo:'{self.additional_info}'"
        return out + "}"
