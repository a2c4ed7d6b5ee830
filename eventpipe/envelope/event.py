"""The CloudEvent model (CloudEvents 1.0, ARCHITECTURE.md section 3).

A plain slotted class rather than a pydantic model: it sits on every hot path
(publish, pipelines, CDC) and validation is a handful of explicit checks.
``data`` holds a JSON value when the content type is JSON (or unset), and
``bytes`` otherwise.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
import uuid_utils

from eventpipe.errors import InvalidEventError

_UTC_Z = orjson.OPT_UTC_Z
SPECVERSION = "1.0"
# The CloudEvents attribute lists, defined here once (the bindings, steps and the
# outbox read them from here).
REQUIRED = ("id", "source", "type")
"""Required attributes besides ``specversion``: non-empty strings."""
OPTIONAL_STRINGS = ("subject", "datacontenttype", "dataschema")
"""Optional attributes that are strings (non-empty when set)."""
OPTIONAL = ("subject", "time", "datacontenttype", "dataschema")
"""Every optional context attribute (``time`` is a timestamp)."""
CORE_ATTRIBUTES = frozenset(("specversion", *REQUIRED, *OPTIONAL))
"""The spec's context attributes: everything else is an extension."""
DATA_MEMBERS = frozenset({"data", "data_base64"})
"""Where a structured event keeps its data."""
NOT_EXTENSIONS = CORE_ATTRIBUTES | DATA_MEMBERS
"""Names an extension can never take."""
# Spec: attribute names use only lower-case a-z and 0-9.  "SHOULD NOT exceed 20
# characters" is a recommendation, so longer names (which other SDKs send) are accepted.
_EXT_NAME = re.compile(r"[a-z0-9]+")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"  # date-time
    r"(?:\.[0-9]+)?"  # fraction
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"  # offset
)
# The type system's String: "the control characters in the ranges U+0000-U+001F and
# U+007F-U+009F" and surrogates MUST NOT be used ("some, such as U+000A (newline), are
# not usable in contexts such as HTTP headers").  Enforced on the attributes that name
# an event or its data (id, source, type, datacontenttype, dataschema), which end up as
# keys and headers; subject and extension values carry producers' data (a CDC row's
# text key), are percent-encoded wherever they become a header, and are left as sent
# rather than dead-lettered on decode (the official SDKs do not check either).
_CHECKED_CHARS = ("datacontenttype", "dataschema")
_FORBIDDEN_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
ExtensionValue = str | int | bool


def new_id() -> str:
    """A UUIDv7: time-ordered, so ids sort by creation."""
    return str(uuid_utils.uuid7())


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time_bytes(t: datetime) -> bytes:
    """RFC 3339 in UTC with a ``Z`` suffix, as ASCII bytes (orjson formats it about
    4x faster than ``isoformat``; this sits on every binary-mode record)."""
    if t.tzinfo is None:
        raise InvalidEventError("time", "must be timezone-aware (RFC 3339 needs an offset)")
    if t.tzinfo is not UTC:
        t = t.astimezone(UTC)
    return orjson.dumps(t, option=_UTC_Z)[1:-1]


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix."""
    return format_time_bytes(t).decode("ascii")


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or numeric offset); result is in UTC."""
    if not isinstance(value, str):
        raise InvalidEventError("time", f"must be an RFC 3339 string, got {type(value).__name__}")
    v = value.strip()
    if not _RFC3339.fullmatch(v):
        raise InvalidEventError("time", f"{value!r} is not an RFC 3339 timestamp")
    if v[-1] in "Zz":
        v = v[:-1] + "+00:00"
    # Python 3.11+ accepts any number of fractional digits (extra precision is dropped).
    try:
        return datetime.fromisoformat(v).astimezone(UTC)
    except ValueError as exc:
        raise InvalidEventError("time", f"{value!r} is not a valid timestamp: {exc}") from exc


def is_json_content_type(ct: str | None) -> bool:
    """True when ``ct`` declares JSON data: ``*/json`` or ``*/*+json`` (JSON format 3.1.1).

    An unset content type counts as JSON, as the JSON event format prescribes."""
    if ct is None:
        return True
    return _is_json_ct(ct)


@lru_cache(maxsize=256)
def _is_json_ct(ct: str) -> bool:
    base = ct.split(";", 1)[0].strip().lower()
    subtype = base.partition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


def validate_extension_name(name: str) -> None:
    if not _extension_name_ok(name):
        if name in NOT_EXTENSIONS:
            raise InvalidEventError(name, "is a reserved attribute name, not an extension")
        raise InvalidEventError(
            str(name), "extension names must be lower-case letters a-z or digits (CloudEvents 1.0)"
        )


@lru_cache(maxsize=1024)
def _extension_name_ok(name: str) -> bool:
    # Cached: the same few names arrive on every event.
    return isinstance(name, str) and name not in NOT_EXTENSIONS and bool(_EXT_NAME.fullmatch(name))


def _check_chars(name: str, value: str) -> None:
    m = _FORBIDDEN_CHAR.search(value)
    if m is not None:
        raise InvalidEventError(
            name,
            f"holds U+{ord(m.group()):04X} at position {m.start()}: CloudEvents strings must "
            "not contain control characters or surrogates",
        )


class CloudEvent:
    __slots__ = (
        "data",
        "datacontenttype",
        "dataschema",
        "extensions",
        "id",
        "source",
        "specversion",
        "subject",
        "time",
        "type",
    )

    def __init__(
        self,
        *,
        id: str,
        source: str,
        type: str,
        data: Any = None,
        subject: str | None = None,
        time: datetime | None = None,
        datacontenttype: str | None = None,
        dataschema: str | None = None,
        extensions: dict[str, ExtensionValue] | None = None,
        specversion: str = SPECVERSION,
        validate: bool = True,
    ) -> None:
        self.specversion = specversion
        self.id = id
        self.source = source
        self.type = type
        self.subject = subject
        self.time = time
        self.datacontenttype = datacontenttype
        self.dataschema = dataschema
        self.data = data
        self.extensions: dict[str, ExtensionValue] = dict(extensions) if extensions else {}
        if validate:
            self.validate()

    # ----------------------------------------------------------------- create
    @classmethod
    def create(
        cls,
        type: str,
        source: str,
        data: Any = None,
        *,
        id: str | None = None,
        subject: str | None = None,
        time: datetime | None = None,
        datacontenttype: str | None = None,
        dataschema: str | None = None,
        **extensions: ExtensionValue,
    ) -> CloudEvent:
        """An event with a UUIDv7 id and the current UTC time unless given."""
        if datacontenttype is None and data is not None and not isinstance(data, bytes):
            datacontenttype = "application/json"
        return cls(
            id=id or new_id(),
            source=source,
            type=type,
            data=data,
            subject=subject,
            time=time or utcnow(),
            datacontenttype=datacontenttype,
            dataschema=dataschema,
            extensions=extensions,
        )

    # --------------------------------------------------------------- validate
    def validate(self) -> None:
        if self.specversion != SPECVERSION:
            raise InvalidEventError(
                "specversion", f"{self.specversion!r} is not supported; use {SPECVERSION!r}"
            )
        for name in REQUIRED:
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise InvalidEventError(name, "is required and must be a non-empty string")
            if not v.isprintable():  # the fast test; the exact one is in _check_chars
                _check_chars(name, v)
        for name in OPTIONAL_STRINGS:
            v = getattr(self, name)
            if v is not None:
                if not isinstance(v, str) or not v:
                    # The spec: "if present, MUST be a non-empty string".
                    raise InvalidEventError(name, "must be a non-empty string when set")
                if name in _CHECKED_CHARS and not v.isprintable():
                    _check_chars(name, v)
        if self.time is not None:
            if not isinstance(self.time, datetime):
                raise InvalidEventError("time", "must be a datetime")
            if self.time.tzinfo is None:
                raise InvalidEventError("time", "must be timezone-aware (RFC 3339 needs an offset)")
        for k, v in self.extensions.items():
            validate_extension_name(k)
            if not isinstance(v, int | str):  # bool is an int
                raise InvalidEventError(
                    k,
                    f"extension values must be string, integer or boolean, not {type(v).__name__}",
                )
            if isinstance(v, int) and not isinstance(v, bool) and not -(2**31) <= v < 2**31:
                raise InvalidEventError(k, "integer extensions must fit in 32 bits")
        if (
            isinstance(self.data, bytes | bytearray)
            and self.datacontenttype is not None
            and is_json_content_type(self.datacontenttype)
        ):
            raise InvalidEventError(
                "data", "bytes given with a JSON datacontenttype; pass the decoded value"
            )

    # ------------------------------------------------------------- accessors
    @property
    def partitionkey(self) -> str | None:
        v = self.extensions.get("partitionkey")
        if v is None:
            return None
        if isinstance(v, bool):  # canonical string form, not Python's "True"
            return "true" if v else "false"
        return str(v)

    def attributes(self) -> dict[str, Any]:
        """Context attributes (core + extensions) as strings/ints/bools; no data."""
        out: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        if self.subject is not None:
            out["subject"] = self.subject
        if self.time is not None:
            out["time"] = format_time(self.time)
        if self.datacontenttype is not None:
            out["datacontenttype"] = self.datacontenttype
        if self.dataschema is not None:
            out["dataschema"] = self.dataschema
        out.update(self.extensions)
        return out

    def replace(self, **changes: Any) -> CloudEvent:
        """A copy with some attributes changed (extensions merged when given)."""
        kw: dict[str, Any] = {
            name: getattr(self, name) for name in self.__slots__ if name != "extensions"
        }
        ext = dict(self.extensions)
        ext.update(changes.pop("extensions", {}) or {})
        kw.update(changes)
        return CloudEvent(extensions=ext, **kw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CloudEvent):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __hash__(self) -> int:
        return hash((self.source, self.id))

    def __repr__(self) -> str:
        return f"CloudEvent(id={self.id!r}, source={self.source!r}, type={self.type!r})"
