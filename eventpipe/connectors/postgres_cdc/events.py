"""Change events: the Debezium-compatible envelope in a CloudEvent (ARCHITECTURE.md s. 4).

``data`` = ``{"before", "after", "op", "source", "ts_ms"}`` with ``op`` one of
c (insert), u (update), d (delete), r (snapshot read), t (truncate), m (logical
message), and ``source`` = ``{version, connector, name, ts_ms, snapshot, db,
schema, table, txId, lsn, xmin}`` as Debezium writes it.  When unchanged TOASTed
values could not be filled in, ``data.unchanged_toast_columns`` names them and
their value in ``after`` is the configured placeholder.

CloudEvent attributes: ``id`` = commit LSN and position in the transaction
(``0/16B3748:3``; a snapshot read ``<high watermark LSN>:r<n>``, a logical message
outside a transaction ``<its LSN>:m``), ``type`` =
``<prefix>.<schema>.<table>.<created|updated|deleted|read|truncated>``, ``time`` =
commit time, ``partitionkey`` = the primary key (its value for a one-column key,
else a JSON object), ``cdclsn`` = the commit LSN.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

from eventpipe import __version__
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.event import ExtensionValue, format_time_bytes
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.errors import PermanentError

from .pgoutput import UNCHANGED, RawValue, Relation
from .types import Converter, TypeRegistry

JSON_CT = "application/json"
JSON_CT_BYTES = JSON_CT.encode()
_SPECVERSION = ("ce_specversion", b"1.0")
_CONTENT_TYPE = ("content-type", JSON_CT_BYTES)
OP_TYPES = {"c": "created", "u": "updated", "d": "deleted", "r": "read", "t": "truncated"}
Out = tuple[str, KafkaMessage, str]  # topic, record, event id


class SchemaMismatchError(PermanentError):
    """A tuple does not match the relation it names (columns changed unseen)."""


class UnencodableRowError(PermanentError):
    """A row whose values cannot be turned into an event (goes to the dead-letter topic)."""


def key_string(values: Sequence[Any], names: Sequence[str]) -> str:
    """The partition key: a one-column key's value as text, else a JSON object."""
    if len(values) == 1:
        v = values[0]
        if isinstance(v, str):
            return v
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        return orjson.dumps(v).decode()
    return orjson.dumps(dict(zip(names, values, strict=True))).decode()


@dataclass(slots=True)
class TableInfo:
    """What events of one table need, rebuilt whenever a Relation message arrives."""

    oid: int
    schema: str
    table: str
    names: list[str]
    converters: list[Converter]
    identity: list[bool]  # columns pgoutput sends in a key-only old tuple
    key: list[str]  # primary key (or configured key columns)
    replident: str
    topic: str
    types: dict[str, str]  # op -> CloudEvent type
    type_headers: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.type_headers = {op: ("ce_type", t.encode("utf-8")) for op, t in self.types.items()}

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def row(self, values: list[RawValue]) -> tuple[dict[str, Any], list[str] | None]:
        """Raw tuple -> (row, names of unchanged TOASTed columns or None)."""
        names = self.names
        if len(values) != len(names):
            raise SchemaMismatchError(
                f"{self.qualified}: tuple has {len(values)} columns, relation {len(names)}"
            )
        row: dict[str, Any] = {}
        unchanged: list[str] | None = None
        for name, conv, raw in zip(names, self.converters, values, strict=True):
            if raw is None:
                row[name] = None
            elif raw is UNCHANGED:
                row[name] = UNCHANGED
                if unchanged is None:
                    unchanged = [name]
                else:
                    unchanged.append(name)
            else:
                row[name] = conv(raw)  # type: ignore[arg-type]
        return row, unchanged

    def key_row(self, values: list[RawValue]) -> dict[str, Any]:
        """A key-only old tuple (REPLICA IDENTITY DEFAULT / USING INDEX) -> its key columns."""
        out: dict[str, Any] = {}
        for name, conv, ident, raw in zip(
            self.names, self.converters, self.identity, values, strict=True
        ):
            if ident:
                out[name] = None if raw is None or raw is UNCHANGED else conv(raw)  # type: ignore[arg-type]
        return out

    def key_of(self, row: dict[str, Any]) -> tuple[Any, ...]:
        key = self.key
        if len(key) == 1:
            return (row.get(key[0]),)
        return tuple([row.get(k) for k in key])


class EventBuilder:
    """Builds the Kafka records of one source's change events."""

    def __init__(
        self,
        *,
        name: str,
        prefix: str,
        type_prefix: str,
        source_uri: str,
        database: str,
        topic_template: str,
        message_topic: str,
        toast_placeholder: str,
        mode: Literal["binary", "structured"] = "binary",
        tombstones_on_delete: bool = False,
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.type_prefix = type_prefix
        self.source_uri = source_uri
        self.database = database
        self.topic_template = topic_template
        self.message_topic = message_topic.format(prefix=prefix, name=name)
        self.placeholder = toast_placeholder
        self.mode: Literal["binary", "structured"] = mode
        self.tombstones = tombstones_on_delete
        self.version = __version__
        self._source_header = ("ce_source", source_uri.encode("utf-8"))
        self._time_cache: tuple[datetime | None, bytes] = (None, b"")

    # ----------------------------------------------------------- relations
    def table_info(self, rel: Relation, registry: TypeRegistry, key: list[str] | None) -> TableInfo:
        names = [c.name for c in rel.columns]
        if key is None or not set(key) <= set(names):
            key = [c.name for c in rel.columns if c.key]
        return TableInfo(
            oid=rel.oid,
            schema=rel.namespace,
            table=rel.name,
            names=names,
            converters=[registry.converter(c.type_oid) for c in rel.columns],
            identity=[c.key for c in rel.columns],
            key=key,
            replident=rel.replident,
            topic=self.topic_template.format(
                prefix=self.prefix, name=self.name, schema=rel.namespace, table=rel.name
            ),
            types={
                op: f"{self.type_prefix}.{rel.namespace}.{rel.name}.{suffix}"
                for op, suffix in OP_TYPES.items()
            },
        )

    def snapshot_table_info(
        self,
        schema: str,
        table: str,
        names: list[str],
        type_oids: list[int],
        key: list[str],
        registry: TypeRegistry,
    ) -> TableInfo:
        """For snapshot rows: built from the query's columns (no Relation message)."""
        return TableInfo(
            oid=0,
            schema=schema,
            table=table,
            names=names,
            converters=[registry.converter(o) for o in type_oids],
            identity=[n in key for n in names],
            key=key,
            replident="?",
            topic=self.topic_template.format(
                prefix=self.prefix, name=self.name, schema=schema, table=table
            ),
            types={
                op: f"{self.type_prefix}.{schema}.{table}.{suffix}"
                for op, suffix in OP_TYPES.items()
            },
        )

    # --------------------------------------------------------------- events
    def source_block(
        self,
        t: TableInfo | None,
        commit_ms: int,
        xid: int | None,
        lsn: int,
        snapshot: str = "false",
    ) -> dict[str, Any]:
        return {
            "version": self.version,
            "connector": "postgresql",
            "name": self.prefix,
            "ts_ms": commit_ms,
            "snapshot": snapshot,
            "db": self.database,
            "sequence": None,
            "schema": t.schema if t is not None else None,
            "table": t.table if t is not None else None,
            "txId": xid,
            "lsn": lsn,
            "xmin": None,
        }

    def _binary(
        self,
        event_id: str,
        type_header: tuple[str, bytes],
        time: datetime,
        data: dict[str, Any],
        key: str | None,
        commit_lsn: str,
    ) -> KafkaMessage:
        """What ``to_kafka(CloudEvent(...))`` gives in binary mode, built directly: the
        per-table and per-transaction header values are encoded once."""
        cached_time, time_bytes = self._time_cache
        if cached_time is not time:
            time_bytes = format_time_bytes(time)
            self._time_cache = (time, time_bytes)
        headers = [
            _SPECVERSION,
            ("ce_id", event_id.encode("utf-8")),
            self._source_header,
            type_header,
            ("ce_time", time_bytes),
            ("ce_cdclsn", commit_lsn.encode("utf-8")),
        ]
        key_bytes = None
        if key is not None:
            key_bytes = key.encode("utf-8")
            headers.append(("ce_partitionkey", key_bytes))
        headers.append(_CONTENT_TYPE)
        return KafkaMessage(key_bytes, orjson.dumps(data), headers)

    def _record(
        self,
        event_id: str,
        ce_type: str,
        time: datetime,
        data: dict[str, Any],
        key: str | None,
        commit_lsn: str,
    ) -> KafkaMessage:
        ext: dict[str, ExtensionValue] = {"cdclsn": commit_lsn}
        if key is not None:
            ext["partitionkey"] = key
        ev = CloudEvent(
            id=event_id,
            source=self.source_uri,
            type=ce_type,
            time=time,
            datacontenttype=JSON_CT,
            data=data,
            extensions=ext,
            validate=False,
        )
        return to_kafka(ev, mode=self.mode)

    def change(
        self,
        t: TableInfo,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        unchanged: list[str] | None,
        *,
        event_id: str,
        time: datetime,
        commit_ms: int,
        commit_lsn: str,
        xid: int | None,
        lsn: int,
        now_ms: int,
        snapshot: str = "false",
    ) -> list[Out]:
        """The record(s) for one row change: the event, plus a tombstone after a delete
        when ``tombstones_on_delete`` is set."""
        keyed = after if after is not None else before
        key = key_string(t.key_of(keyed), t.key) if keyed is not None else None
        data: dict[str, Any] = {
            "before": before,
            "after": after,
            "op": op,
            "source": self.source_block(t, commit_ms, xid, lsn, snapshot),
            "ts_ms": now_ms,
        }
        if unchanged:
            data["unchanged_toast_columns"] = unchanged
        try:
            if self.mode == "binary":
                msg = self._binary(event_id, t.type_headers[op], time, data, key, commit_lsn)
            else:
                msg = self._record(event_id, t.types[op], time, data, key, commit_lsn)
        except (TypeError, ValueError) as exc:  # orjson: a value JSON cannot hold
            raise UnencodableRowError(f"{t.qualified}: {exc}") from exc
        out: list[Out] = [(t.topic, msg, event_id)]
        if op == "d" and self.tombstones and key is not None:
            out.append((t.topic, KafkaMessage(msg.key, None, []), event_id + ":tombstone"))
        return out

    def truncate(
        self,
        t: TableInfo,
        *,
        event_id: str,
        time: datetime,
        commit_ms: int,
        commit_lsn: str,
        xid: int,
        lsn: int,
        now_ms: int,
    ) -> Out:
        data = {
            "before": None,
            "after": None,
            "op": "t",
            "source": self.source_block(t, commit_ms, xid, lsn),
            "ts_ms": now_ms,
        }
        return (
            t.topic,
            self._record(event_id, t.types["t"], time, data, None, commit_lsn),
            event_id,
        )

    def message(
        self,
        prefix: str,
        content: bytes,
        *,
        transactional: bool,
        event_id: str,
        time: datetime,
        commit_ms: int,
        commit_lsn: str,
        xid: int | None,
        lsn: int,
        now_ms: int,
    ) -> Out:
        data = {
            "op": "m",
            "ts_ms": now_ms,
            "source": self.source_block(None, commit_ms, xid, lsn),
            "message": {
                "prefix": prefix,
                "content": base64.b64encode(content).decode("ascii"),
                "transactional": transactional,
            },
        }
        msg = self._record(event_id, f"{self.type_prefix}.message", time, data, prefix, commit_lsn)
        return (self.message_topic, msg, event_id)


def fill_unchanged(
    after: dict[str, Any], unchanged: list[str], before: dict[str, Any] | None, placeholder: str
) -> list[str] | None:
    """Unchanged TOASTed values in ``after``: taken from a full old row when there is one
    (REPLICA IDENTITY FULL: the value did not change), else the placeholder.  Returns
    the columns left as placeholders, or None."""
    missing: list[str] = []
    for col in unchanged:
        old = before.get(col, UNCHANGED) if before is not None else UNCHANGED
        if old is UNCHANGED:
            after[col] = placeholder
            missing.append(col)
        else:
            after[col] = old
    return missing or None


@dataclass(frozen=True, slots=True)
class Capture:
    """What one source captures (its tables and their keys) and how its events are
    built: shared by transaction assembly, the snapshot window and initial_only."""

    tables: frozenset[str]
    keys: dict[str, list[str]]
    builder: EventBuilder
    registry: TypeRegistry

    @property
    def name(self) -> str:
        return self.builder.name
