"""The ``validate`` step: check each event's data against a JSON Schema or Avro schema.

An example is ``PLUGIN``'s ``example`` (shown in docs/reference.md#step-validate
with every key, and loaded by tests/unit/test_reference.py).

The schema is compiled once, at config load: JSON Schema by jsonschema-rs
(offline: a remote ``$ref`` is a config error, not a network call), Avro by
fastavro's parser and :class:`~eventpipe.transforms.avro_check.AvroChecker`.
A ``subject`` is looked up through the ``resolve_schema`` callable the chain's
builder passes in (:class:`~eventpipe.transforms.base.StepContext`).

An invalid event raises :class:`SchemaValidationError` (permanent) naming each
violation's JSONPath and rule, e.g. ``$.items[0].qty: minimum: 0 is less than
the minimum of 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any, ClassVar, Literal, TypeAlias

import jsonschema_rs
import orjson
from pydantic import ConfigDict, Field, field_validator, model_validator

from eventpipe.envelope import CloudEvent
from eventpipe.errors import ConfigError, RetriableError
from eventpipe.plugin import PluginConfig

from .avro_check import AvroChecker, AvroSchemaError
from .base import StepContext, TransformStep
from .errors import SchemaValidationError, Violation

SchemaType = Literal["JSON", "AVRO"]
MAX_VIOLATIONS = 10

_DRAFTS: dict[str, Callable[..., Any]] = {
    "7": jsonschema_rs.Draft7Validator,
    "2020-12": jsonschema_rs.Draft202012Validator,
}


class ValidateConfig(PluginConfig):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Any = Field(
        default=None,
        alias="schema",
        description="an inline schema (a mapping, or its JSON text); or give subject",
    )
    schema_type: SchemaType | None = Field(
        None, description="the inline schema's kind; default JSON (a subject says its own)"
    )
    draft: Literal["7", "2020-12"] | None = Field(
        None, description="JSON Schema draft; default: the schema's $schema, else 2020-12"
    )
    subject: str | None = Field(
        default=None, min_length=1, description="a schema registry subject; or give schema"
    )
    version: int | Literal["latest"] = Field(
        "latest", description="the subject's version (a number from 1), looked up at start"
    )

    @field_validator("schema_type", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("draft", mode="before")
    @classmethod
    def _draft(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        if isinstance(v, str):
            return {"draft7": "7", "draft-07": "7", "07": "7", "2020": "2020-12"}.get(v.lower(), v)
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("versions start at 1; use an int >= 1 or 'latest'")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ValidateConfig:
        if (self.schema_ is None) == (self.subject is None):
            raise ValueError(
                "give exactly one of `schema:` (inline) or `subject:` (from the schema registry)"
            )
        if "version" in self.model_fields_set and self.subject is None:
            raise ValueError("`version:` only applies with `subject:`")
        if self.draft is not None and self.schema_type == "AVRO":
            raise ValueError("`draft:` only applies to JSON Schema")
        return self


def json_path(parts: Any) -> str:
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and p.isidentifier():
            out += f".{p}"
        else:
            escaped = str(p).replace("\\", "\\\\").replace("'", "\\'")
            out += f"['{escaped}']"
    return out


class JsonSchemaChecker:
    """jsonschema-rs, compiled once; ``is_valid`` is the per-event fast path."""

    def __init__(self, schema: Any, draft: str | None) -> None:
        if not isinstance(schema, dict | bool):
            kind = type(schema).__name__
            raise ValueError(f"a JSON Schema is an object or a boolean, not {kind}")
        make = _DRAFTS[draft] if draft else jsonschema_rs.validator_for
        try:
            self._validator = make(schema, offline=True)
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            where = ""
            if isinstance(exc, jsonschema_rs.ValidationError) and list(exc.instance_path):
                where = f" (at {json_path(exc.instance_path)} in the schema)"
            raise ValueError(f"invalid JSON Schema: {first}{where}") from exc
        self.is_valid: Callable[[Any], bool] = self._validator.is_valid

    def violations(self, data: Any) -> list[Violation]:
        out = []
        for err in islice(self._validator.iter_errors(data), MAX_VIOLATIONS):
            schema_path = list(err.schema_path)
            rule = str(schema_path[-1]) if schema_path else "schema"
            out.append(Violation(json_path(err.instance_path), rule, err.message))
        return out or [Violation("$", "schema", "does not match the schema")]


Checker: TypeAlias = JsonSchemaChecker | AvroChecker


class ValidateStep(TransformStep):
    type_name = "validate"
    Config = ValidateConfig
    main_field: ClassVar[str] = "subject"

    def __init__(
        self,
        config: ValidateConfig,
        *,
        name: str | None = None,
        context: StepContext | None = None,
    ) -> None:
        super().__init__(config, name=name, context=context)
        self.cfg = config
        if config.subject is not None:
            field = "subject"
            schema_type, schema = self._resolve(config)
        else:
            field = "schema"
            schema_type = config.schema_type or "JSON"
            schema = config.schema_
            if isinstance(schema, str):
                try:
                    schema = orjson.loads(schema)
                except orjson.JSONDecodeError as exc:
                    if schema_type == "JSON":
                        raise ConfigError([(field, f"schema text is not JSON: {exc}")]) from exc
                    # Avro allows a bare type name ("string") as a schema.
        self.schema_type: SchemaType = schema_type
        try:
            if schema_type == "JSON":
                self.checker: Checker = JsonSchemaChecker(schema, config.draft)
            else:
                self.checker = AvroChecker(schema)
        except (ValueError, AvroSchemaError) as exc:
            raise ConfigError([(field, str(exc))]) from exc
        self._is_valid = self.checker.is_valid

    def _resolve(self, config: ValidateConfig) -> tuple[SchemaType, Any]:
        assert config.subject is not None
        resolve = self.context.resolve_schema
        if resolve is None:
            raise ConfigError(
                [
                    (
                        "subject",
                        "a schema by subject needs a schema registry: pass resolve_schema= "
                        "to the Chain, or give the schema inline with `schema:`",
                    )
                ]
            )
        try:
            found_type, text = resolve(config.subject, config.version)
        except RetriableError:
            raise  # registry unreachable: the caller retries, this is not a config problem
        except Exception as exc:
            raise ConfigError(
                [
                    (
                        "subject",
                        f"cannot resolve {config.subject!r} version {config.version}: {exc}",
                    )
                ]
            ) from exc
        kind = str(found_type or "AVRO").upper()  # Confluent: a missing schemaType means AVRO
        if kind not in ("JSON", "AVRO"):
            msg = f"{config.subject!r} holds a {kind} schema; only JSON and AVRO validate"
            raise ConfigError([("subject", msg)])
        if config.schema_type is not None and config.schema_type != kind:
            raise ConfigError(
                [("schema_type", f"is {config.schema_type} but {config.subject!r} holds {kind}")]
            )
        try:
            schema = orjson.loads(text) if isinstance(text, str | bytes) else text
        except orjson.JSONDecodeError as exc:
            if kind == "JSON":
                msg = f"the registry's schema is not JSON: {exc}"
                raise ConfigError([("subject", msg)]) from exc
            schema = text
        return kind, schema  # type: ignore[return-value]

    def apply(self, event: CloudEvent) -> list[CloudEvent]:
        data = event.data
        try:
            if self._is_valid(data):
                return [event]
        except (ValueError, TypeError, OverflowError) as exc:
            raise SchemaValidationError([_not_json(data, exc)]) from exc
        if isinstance(data, bytes | bytearray) and self.schema_type == "JSON":
            raise SchemaValidationError([_not_json(data, None)])
        raise SchemaValidationError(self.checker.violations(data))


def _not_json(data: Any, exc: BaseException | None) -> Violation:
    if isinstance(data, bytes | bytearray):
        return Violation("$", "type", "data is binary; decode it to JSON before validating")
    return Violation("$", "type", f"data is not a JSON value: {exc}")


PLUGIN = ValidateStep.as_plugin(
    "checks data against a JSON Schema or Avro schema (inline or a registry subject)",
    example="""\
- validate: orders-value          # short form: a registry subject, latest version
- validate: {subject: orders-value, version: 3}
- validate:                       # inline JSON Schema (draft from $schema, else 2020-12)
    schema: {type: object, required: [id]}
    draft: "7"                    # optional: 7 | 2020-12, overrides $schema
- validate:
    schema_type: AVRO
    schema:
      type: record
      name: Order
      fields: [{name: id, type: string}, {name: total, type: double}]
""",
)
