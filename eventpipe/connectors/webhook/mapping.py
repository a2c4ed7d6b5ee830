"""From an input value to CloudEvent attributes, by jq expressions.

:class:`FieldProgram` runs several named expressions (``type``, ``subject``,
``partitionkey``, extensions) as **one** jq program, so the input is handed to
the engine once per request, not once per field; an expression that is a JSON
literal (``"com.example.push"``) is a constant and costs nothing.  Programs come
from :mod:`eventpipe.transforms.jq_engine` (jaq by default, libjq on request).

:class:`WebhookMapper` turns a verified request into its event: the id from the
provider's delivery id (a redelivery keeps it), ``time`` the receipt time, and
``whdigest`` / ``whtimestamp`` / ``whsignature`` extensions so the signature can be
checked again later.  With ``body: raw`` the record value is the body byte for
byte.  The record's content type is always ``application/json``, whatever the
request said: a sender's ``application/cloudevents+json`` would make readers take
the body for a structured CloudEvent, with an id, source and type of its choosing.

Every attribute is a CloudEvents String (spec, type system): no control characters
(U+0000-U+001F, U+007F-U+009F), no noncharacters, and valid Unicode; a header
holding bytes that are not UTF-8 reaches us as lone surrogates.  Anything else is
a MappingError (422) here, before it can poison a record or a spool row.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.event import format_time_bytes
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.errors import ConfigError, PermanentError
from eventpipe.transforms.errors import TransformError
from eventpipe.transforms.jq_engine import (
    NO_OUTPUT,
    EngineName,
    JqCompileError,
    Program,
    compile_program,
)

from .config import WebhookConfig
from .paths import PathExpr, parse_path
from .verify import Verified

JSON_CT = "application/json"
_SPECVERSION = ("ce_specversion", b"1.0")
_JSON_CT_HEADER = ("content-type", JSON_CT.encode())
_NO_HEADERS: dict[str, str] = {}
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17)
)
_NOT_STRING = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_NONCHARACTERS}]")


class MappingError(PermanentError):
    """The mapping cannot build an event from this input (HTTP 422): ``field`` names
    the attribute."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _constant(source: str) -> tuple[bool, Any]:
    try:
        value = orjson.loads(source)
    except orjson.JSONDecodeError:
        return False, None
    return (True, value) if value is None or isinstance(value, str | int | bool) else (False, None)


class FieldProgram:
    """Named jq expressions over one input: plain paths evaluated directly
    (:mod:`.paths`), the rest fused into one jq program."""

    def __init__(self, fields: Mapping[str, str], engine: EngineName, where: str = "") -> None:
        self.constants: dict[str, Any] = {}
        self.paths: dict[str, PathExpr] = {}
        exprs: dict[str, str] = {}
        self._single: dict[str, Program] = {}
        problems = []
        for name, source in fields.items():
            is_const, value = _constant(source)
            if is_const:
                self.constants[name] = value
                continue
            path = parse_path(source)
            if path is not None:
                self.paths[name] = path
                continue
            try:
                self._single[name] = compile_program(source, engine)
            except JqCompileError as exc:
                problems.append((f"{where}{name}", exc.message))
                continue
            exprs[name] = source
        if problems:
            raise ConfigError(problems)
        self.names = list(exprs)
        self.uses_headers = any("headers" in s for s in fields.values())
        self._program: Program | None = None
        if exprs:
            fused = "[" + ", ".join(f"([({s})] | .[0])" for s in exprs.values()) + "]"
            self._program = compile_program(fused, engine)

    @property
    def empty(self) -> bool:
        return self._program is None and not self.constants and not self.paths

    def run(self, value: Any) -> dict[str, Any]:
        """name -> value (``None`` when an expression gave ``null`` or nothing)."""
        out = dict(self.constants)
        for name, path in self.paths.items():
            try:
                out[name] = path.eval(value)
            except TransformError as exc:
                raise MappingError(name, exc.detail) from exc
        if self._program is not None:
            try:
                results = self._program.first(value)
            except TransformError as exc:
                raise self._which_failed(value, exc) from exc
            if results is NO_OUTPUT or not isinstance(results, list):
                results = [None] * len(self.names)
            out.update(zip(self.names, results, strict=True))
        return out

    def _which_failed(self, value: Any, exc: TransformError) -> MappingError:
        """The fused program failed: run the fields alone to name the one at fault."""
        for name, program in self._single.items():
            try:
                program.first(value)
            except TransformError as single:
                return MappingError(name, single.detail)
        return MappingError("mapping", exc.detail)


def check_text(field: str, value: str) -> str:
    """``value`` if it is a valid CloudEvents String, else MappingError naming ``field``."""
    bad = _NOT_STRING.search(value)
    if bad is None:
        return value
    code = ord(bad.group())
    if 0xD800 <= code <= 0xDFFF:
        raise MappingError(field, "is not valid UTF-8")
    kind = "control character" if code <= 0x9F else "noncharacter"
    raise MappingError(field, f"holds the {kind} U+{code:04X}; CloudEvents attributes allow none")


def _text(field: str, value: Any) -> str | None:
    """An attribute value as text: strings as they are, numbers in decimal, null absent."""
    if value is None:
        return None
    if isinstance(value, str):
        return check_text(field, value) if value else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise MappingError(field, f"gave a {type(value).__name__}; expected a string")


def digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _default_type(scheme: str, name: str) -> str:
    fallback = orjson.dumps(f"webhook.{name}").decode()
    if scheme in ("standard-webhooks", "stripe"):
        return f".body.type // {fallback}"
    if scheme == "github":
        return '"github." + (.headers["x-github-event"] // "unknown")'
    return fallback


class WebhookMapper:
    def __init__(self, cfg: WebhookConfig, name: str) -> None:
        ev = cfg.event
        self.id_fallback = ev.id_fallback
        self.source = ev.source or f"/webhooks/{name}"
        self.keep_raw = cfg.body == "raw"
        fields: dict[str, str] = {}
        if cfg.input == "json":
            fields["type"] = ev.type or _default_type(cfg.scheme, name)
            id_expr = ev.id or (".body.id" if cfg.scheme == "stripe" else None)
            if id_expr is not None:
                fields["id"] = id_expr
            if ev.subject is not None:
                fields["subject"] = ev.subject
        if ev.partitionkey is not None:
            fields["partitionkey"] = ev.partitionkey
        for ext, expr in ev.extensions.items():
            fields[f"ext.{ext}"] = expr
        self.fields = FieldProgram(fields, ev.engine, where="event.")
        self.uses_headers = self.fields.uses_headers
        self._source_header = ("ce_source", self.source.encode())

    def attributes(self, body: Any, headers: Mapping[str, str] | None) -> dict[str, Any]:
        return self.fields.run({"body": body, "headers": headers or {}})

    def event(
        self,
        *,
        raw: bytes,
        body: Any,
        headers: Mapping[str, str] | None,
        verified: Verified,
        received: datetime,
        body_digest: str,
    ) -> CloudEvent:
        """The event for one JSON webhook request."""
        attrs = self.attributes(body, headers)
        event_id = self._event_id(attrs, verified, body_digest)
        event_type = self._event_type(attrs)
        ext: dict[str, str | int | bool] = {"whdigest": body_digest}
        if verified.timestamp is not None:
            ext["whtimestamp"] = str(verified.timestamp)
        if verified.signature is not None:
            ext["whsignature"] = check_text("whsignature", verified.signature)
        self._extensions(attrs, ext)
        try:
            event = CloudEvent(
                id=event_id,
                source=self.source,
                type=event_type,
                subject=_text("subject", attrs.get("subject")),
                time=received,
                datacontenttype=JSON_CT,
                extensions=ext,
            )
        except PermanentError as exc:  # InvalidEventError: an attribute the spec refuses
            raise MappingError(getattr(exc, "field", "event"), str(exc)) from exc
        # body: raw: the value is the body byte for byte; its JSON content type makes
        # readers parse it, so `data` reads back as the JSON value.
        event.data = raw if self.keep_raw else body
        return event

    def message(
        self,
        *,
        raw: bytes,
        body: Any,
        headers: Mapping[str, str] | None,
        verified: Verified,
        received: datetime,
        body_digest: str,
    ) -> tuple[str, KafkaMessage]:
        """(event id, Kafka record) for one JSON webhook request: the same record
        ``to_kafka(self.event(...))`` gives (binary mode), built without the
        intermediate event, as this runs once per request."""
        attrs = self.fields.run({"body": body, "headers": headers or _NO_HEADERS})
        event_id = self._event_id(attrs, verified, body_digest)
        event_type = self._event_type(attrs)
        h = [
            _SPECVERSION,
            ("ce_id", event_id.encode()),
            self._source_header,
            ("ce_type", event_type.encode()),
        ]
        subject = _text("subject", attrs.get("subject"))
        if subject is not None:
            h.append(("ce_subject", subject.encode()))
        h.append(("ce_time", format_time_bytes(received)))
        h.append(("ce_whdigest", body_digest.encode()))
        if verified.timestamp is not None:
            h.append(("ce_whtimestamp", str(verified.timestamp).encode()))
        if verified.signature is not None:
            h.append(("ce_whsignature", check_text("whsignature", verified.signature).encode()))
        key = None
        ext: dict[str, str | int | bool] = {}
        self._extensions(attrs, ext)
        for name, ext_value in ext.items():
            encoded = str(ext_value).encode()
            if name == "partitionkey":
                key = encoded
            h.append(("ce_" + name, encoded))
        h.append(_JSON_CT_HEADER)
        value = raw if self.keep_raw else orjson.dumps(body)
        return event_id, KafkaMessage(key, value, h)

    def _event_id(self, attrs: dict[str, Any], verified: Verified, body_digest: str) -> str:
        event_id = _text("id", attrs.get("id"))
        if event_id is None and verified.delivery_id:
            event_id = check_text("id", verified.delivery_id)
        if event_id is None:
            if self.id_fallback == "reject":
                raise MappingError("id", "the request carries no delivery id")
            event_id = body_digest
        return event_id

    @staticmethod
    def _event_type(attrs: dict[str, Any]) -> str:
        event_type = _text("type", attrs.get("type"))
        if event_type is None:
            raise MappingError("type", "the type expression gave null or nothing")
        return event_type

    def decorate(
        self, event: CloudEvent, headers: Mapping[str, str] | None, body_digest: str
    ) -> None:
        """input: cloudevents: keep the sender's attributes (each a valid CloudEvents
        String, as ours are), add ours."""
        for name, value in event.attributes().items():
            if isinstance(value, str):
                check_text(name, value)
        event.extensions["whdigest"] = body_digest
        if not self.fields.empty:
            attrs = self.attributes(event.data, headers)
            self._extensions(attrs, event.extensions)

    @staticmethod
    def _extensions(attrs: dict[str, Any], ext: dict[str, str | int | bool]) -> None:
        for key, value in attrs.items():
            if key == "partitionkey":
                pk = _text("partitionkey", value)
                if pk is not None:
                    ext["partitionkey"] = pk
            elif key.startswith("ext."):
                text = _text(key[4:], value)
                if text is not None:
                    ext[key[4:]] = text
