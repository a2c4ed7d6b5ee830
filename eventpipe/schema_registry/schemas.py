"""Parsing schemas of each type, their stored text, fingerprints for dedup, and
references between schemas.

``parse(schema_type, text, references)`` returns an :class:`AvroSchema` or a
:class:`JsonSchema`, or raises :class:`InvalidSchema` naming what is wrong.
``references`` are already-parsed schemas (dependencies first), so a schema can
use an Avro type or a JSON Schema ``$ref`` another registered schema defines.

Two registrations are the same schema (same global id) when their fingerprints
match: schema type, the schema normalised (object keys sorted, whitespace
dropped, Avro ``{"type": "int"}`` written as ``"int"``) and the references.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import jsonschema_rs
import orjson
from fastavro.schema import parse_schema as fastavro_parse

from .errors import InvalidSchema
from .models import AVRO, JSON, SCHEMA_TYPES, SchemaReference

AVRO_PRIMITIVES = frozenset(
    ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Base URI for JSON Schema references named relatively ("address.json"), so they
# resolve without any network access.
JSON_BASE_URI = "https://schema-registry.eventpipe.invalid/schemas/"


@dataclass(frozen=True, eq=False)
class ParsedSchema:
    schema_type: str
    text: str
    references: tuple[ResolvedReference, ...]
    fingerprint: str
    document: Any

    @property
    def record_name(self) -> str | None:
        return None

    @property
    def reference_list(self) -> tuple[SchemaReference, ...]:
        return tuple(r.reference for r in self.references)


@dataclass(frozen=True, eq=False)
class ResolvedReference:
    reference: SchemaReference
    schema: ParsedSchema


@dataclass(frozen=True, eq=False)
class AvroSchema(ParsedSchema):
    # fastavro's parsed form (usable with schemaless_reader/_writer) and every named
    # type it can see (its own and its references'), full name -> parsed schema.
    parsed: Any = None
    names: dict[str, Any] = field(default_factory=dict)
    # what fastavro's schemaless_reader / _writer take: ``parsed``, or for a top-level
    # union or name (which fastavro would re-parse without the named types) the
    # schema with those types written out
    wire: Any = None

    @property
    def record_name(self) -> str | None:
        if isinstance(self.parsed, dict) and self.parsed.get("type") in (
            "record",
            "error",
            "enum",
            "fixed",
        ):
            return str(self.parsed["name"])
        return None


@dataclass(frozen=True, eq=False)
class JsonSchema(ParsedSchema):
    # the document with references to other registered schemas inlined (recursive
    # references stay as "$ref"), and the resources a validator needs.
    resolved: Any = None
    resources: tuple[tuple[str, Any], ...] = ()

    @property
    def record_name(self) -> str | None:
        if isinstance(self.document, dict) and isinstance(self.document.get("title"), str):
            return str(self.document["title"])
        return None

    def validator(self) -> Any:
        """A jsonschema-rs validator; never fetches anything over the network."""
        registry = jsonschema_rs.Registry(list(self.resources)) if self.resources else None
        return jsonschema_rs.validator_for(
            self.document, registry=registry, base_uri=_base_uri(self.document), offline=True
        )


def parse(
    schema_type: str | None, text: str, references: Sequence[ResolvedReference] = ()
) -> ParsedSchema:
    schema_type = (schema_type or AVRO).upper()
    if schema_type not in SCHEMA_TYPES:
        raise InvalidSchema(
            f"schema type {schema_type!r} is not supported; use one of {', '.join(SCHEMA_TYPES)}"
        )
    if not isinstance(text, str) or not text.strip():
        raise InvalidSchema("the schema is empty")
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidSchema(f"the schema is not valid JSON: {exc}") from exc
    refs = tuple(references)
    for r in refs:
        if r.schema.schema_type != schema_type:
            raise InvalidSchema(
                f"reference {r.reference.name!r} ({r.reference.subject} version "
                f"{r.reference.version}) is a {r.schema.schema_type} schema, not {schema_type}"
            )
    if schema_type == AVRO:
        return _parse_avro(document, refs)
    return _parse_json(document, refs)


def fingerprint(schema_type: str, normalized: Any, references: Iterable[SchemaReference]) -> str:
    h = hashlib.sha256()
    h.update(schema_type.encode())
    h.update(b"\0")
    h.update(orjson.dumps(normalized, option=orjson.OPT_SORT_KEYS))
    h.update(b"\0")
    h.update(orjson.dumps([r.to_dict() for r in references], option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()


def compact(document: Any) -> str:
    return orjson.dumps(document).decode()


# --------------------------------------------------------------------------- Avro


def _avro_normalize(node: Any) -> Any:
    if isinstance(node, list):
        return [_avro_normalize(n) for n in node]
    if isinstance(node, dict):
        if set(node) == {"type"} and isinstance(node["type"], str | list | dict):
            return _avro_normalize(node["type"])
        out = {}
        for k, v in node.items():
            if k in ("type", "items", "values", "fields"):
                out[k] = _avro_normalize(v)
            else:
                out[k] = v
        return out
    return node


def _full_name(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


class _AvroChecker:
    """Checks fastavro leaves alone: name syntax, unique field names, fixed sizes,
    record fields, unions, names defined twice."""

    def __init__(self, known: Iterable[str]) -> None:
        self.defined: set[str] = set(known)

    def fail(self, path: str, message: str) -> None:
        raise InvalidSchema(f"{message} (at {path or '/'})")

    def check_name(self, name: object, path: str, what: str) -> None:
        if not isinstance(name, str) or not all(_NAME.match(p) for p in name.split(".")):
            self.fail(
                path,
                f"{what} {name!r} is not a valid Avro name "
                "([A-Za-z_][A-Za-z0-9_]*, dot-separated for namespaces)",
            )

    def named(self, node: dict[str, Any], ns: str | None, path: str) -> str | None:
        self.check_name(node.get("name"), path + "/name", f"{node['type']} name")
        namespace = node.get("namespace", ns)
        if namespace not in (None, ""):
            self.check_name(namespace, path + "/namespace", "namespace")
        full = _full_name(node["name"], namespace or None)
        if full in self.defined:
            self.fail(path, f"the name {full!r} is defined twice")
        self.defined.add(full)
        return full.rpartition(".")[0] or None

    def walk(self, node: Any, ns: str | None, path: str) -> None:
        if isinstance(node, str):
            return  # primitive or named reference: fastavro checks it is known
        if isinstance(node, list):
            seen: set[str] = set()
            for i, branch in enumerate(node):
                if isinstance(branch, list):
                    self.fail(f"{path}/{i}", "a union may not directly contain another union")
                key = self.branch_key(branch, ns)
                if key in seen:
                    self.fail(f"{path}/{i}", f"the union holds {key!r} twice")
                seen.add(key)
                self.walk(branch, ns, f"{path}/{i}")
            return
        if not isinstance(node, dict):
            self.fail(path, f"a schema must be a string, array or object, not {node!r}")
            return
        kind = node.get("type")
        if isinstance(kind, list | dict):
            self.walk(kind, ns, path + "/type")
            return
        if kind in ("record", "error"):
            inner = self.named(node, ns, path)
            fields = node.get("fields")
            if not isinstance(fields, list):
                self.fail(path, f"record {node.get('name')!r} needs a 'fields' array")
                return
            names: set[str] = set()
            for i, f in enumerate(fields):
                fpath = f"{path}/fields/{i}"
                if not isinstance(f, dict):
                    self.fail(fpath, "a field must be an object")
                self.check_name(f.get("name"), fpath + "/name", "field name")
                if f["name"] in names:
                    self.fail(fpath, f"field {f['name']!r} appears twice")
                names.add(f["name"])
                if "type" not in f:
                    self.fail(fpath, f"field {f['name']!r} has no type")
                self.walk(f["type"], inner, fpath + "/type")
                ftype = f["type"]
                if (
                    "default" in f
                    and isinstance(ftype, dict)
                    and ftype.get("type") == "enum"
                    and f["default"] not in ftype.get("symbols", [])
                ):
                    self.fail(
                        fpath,
                        f"default {f['default']!r} of field {f['name']!r} is not "
                        "one of the enum's symbols",
                    )
        elif kind == "enum":
            self.named(node, ns, path)
            if not isinstance(node.get("symbols"), list):
                self.fail(path, "an enum needs a 'symbols' array")
        elif kind == "fixed":
            self.named(node, ns, path)
            size = node.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                self.fail(path, "a fixed type needs a non-negative integer 'size'")
        elif kind == "array":
            if "items" not in node:
                self.fail(path, "an array needs 'items'")
            self.walk(node["items"], ns, path + "/items")
        elif kind == "map":
            if "values" not in node:
                self.fail(path, "a map needs 'values'")
            self.walk(node["values"], ns, path + "/values")
        elif not isinstance(kind, str):
            self.fail(path, f"'type' must be a string, array or object, not {kind!r}")

    def branch_key(self, branch: Any, ns: str | None) -> str:
        if isinstance(branch, str):
            return branch if branch in AVRO_PRIMITIVES else _full_name(branch, ns)
        if isinstance(branch, dict):
            kind = branch.get("type")
            if kind in ("record", "error", "enum", "fixed") and isinstance(branch.get("name"), str):
                return _full_name(branch["name"], branch.get("namespace", ns) or None)
            if isinstance(kind, str):
                return kind
        return repr(branch)


def _parse_avro(document: Any, refs: tuple[ResolvedReference, ...]) -> AvroSchema:
    names: dict[str, Any] = {}
    for r in refs:
        assert isinstance(r.schema, AvroSchema)
        names.update(r.schema.names)
    _AvroChecker(names).walk(document, None, "")
    named = dict(names)
    try:
        parsed = fastavro_parse(document, named_schemas=named)
    except Exception as exc:  # fastavro raises SchemaParseException, UnknownType, KeyError
        raise InvalidSchema(_fastavro_message(exc)) from exc
    wire = parsed
    if not isinstance(parsed, dict):
        try:
            wire = fastavro_parse(document, named_schemas=dict(names), expand=True)
        except Exception as exc:
            raise InvalidSchema(_fastavro_message(exc)) from exc
    normalized = _avro_normalize(document)
    reflist = [r.reference for r in refs]
    return AvroSchema(
        schema_type=AVRO,
        text=compact(document),
        references=refs,
        fingerprint=fingerprint(AVRO, normalized, reflist),
        document=document,
        parsed=parsed,
        names=named,
        wire=wire,
    )


def _fastavro_message(exc: Exception) -> str:
    name = type(exc).__name__
    if name == "UnknownType":
        return (
            f"unknown type {str(exc)!r}; define it first or add a reference to the schema "
            "defining it"
        )
    if isinstance(exc, KeyError):
        return f"missing attribute {exc}"
    return str(exc) or name


# --------------------------------------------------------------------------- JSON


def _base_uri(document: Any) -> str:
    if isinstance(document, dict) and isinstance(document.get("$id"), str):
        sid = document["$id"]
        if urlsplit(sid).scheme:
            return sid
        return urljoin(JSON_BASE_URI, sid)
    return JSON_BASE_URI + "root.json"


def reference_uris(name: str, root: Any) -> list[str]:
    """The URIs a ``$ref`` naming reference ``name`` may resolve to."""
    if urlsplit(name).scheme:
        return [name]
    uris = [urljoin(_base_uri(root), name), urljoin(JSON_BASE_URI, name)]
    return list(dict.fromkeys(uris))


def _json_resources(document: Any, refs: tuple[ResolvedReference, ...]) -> list[tuple[str, Any]]:
    out: dict[str, Any] = {}
    for r in refs:
        assert isinstance(r.schema, JsonSchema)
        for uri, doc in r.schema.resources:
            out.setdefault(uri, doc)
        for uri in reference_uris(r.reference.name, document):
            out[uri] = r.schema.document
    return list(out.items())


def _parse_json(document: Any, refs: tuple[ResolvedReference, ...]) -> JsonSchema:
    if not isinstance(document, dict | bool):
        raise InvalidSchema("a JSON Schema must be an object or a boolean")
    resources = _json_resources(document, refs)
    registry = jsonschema_rs.Registry(resources) if resources else None
    try:
        jsonschema_rs.meta.validate(document, registry=registry)
    except jsonschema_rs.ValidationError as exc:
        where = "/" + "/".join(str(p) for p in exc.schema_path) if exc.schema_path else ""
        at = "/".join(str(p) for p in exc.instance_path)
        raise InvalidSchema(f"{exc.message} (at #/{at}; meta-schema {where or '/'})") from exc
    except jsonschema_rs.ReferencingError as exc:
        raise InvalidSchema(str(exc)) from exc
    base = _base_uri(document)
    try:
        resolved = jsonschema_rs.dereference(
            document, registry=registry, base_uri=base, offline=True
        )
    except jsonschema_rs.ReferencingError as exc:
        raise InvalidSchema(
            f"{exc}; add a reference to the schema it names (references: name = the $ref)"
        ) from exc
    try:
        jsonschema_rs.validator_for(document, registry=registry, base_uri=base, offline=True)
    except (ValueError, jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        raise InvalidSchema(str(exc).strip().splitlines()[0]) from exc
    reflist = [r.reference for r in refs]
    return JsonSchema(
        schema_type=JSON,
        text=compact(document),
        references=refs,
        fingerprint=fingerprint(JSON, document, reflist),
        document=document,
        resolved=resolved,
        resources=tuple(resources),
    )
