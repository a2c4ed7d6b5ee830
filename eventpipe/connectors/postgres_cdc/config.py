"""The ``postgres_cdc`` source's typed config (one ``sources:`` entry).

An example is ``source.PLUGIN``'s ``example`` (shown in
docs/reference.md#source-postgres-cdc with every key, and loaded by
tests/unit/test_reference.py).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from eventpipe.plugin import PluginConfig, SourceConfig
from eventpipe.topics import TopicName

from .types import NumericMode

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")
TOPIC_FIELDS = ("prefix", "name", "schema", "table")
SnapshotMode = Literal["initial", "never", "initial_only"]


def parse_table(name: str) -> tuple[str, str]:
    """``"orders"`` -> ("public", "orders"); ``"shop.orders"`` -> ("shop", "orders")."""
    schema, dot, table = name.partition(".")
    if not dot:
        schema, table = "public", name
    for part in (schema, table):
        if not _IDENT.match(part):
            raise ValueError(
                f"{name!r}: use schema.table with unquoted identifiers (letters, digits, _)"
            )
    return schema, table


def qualified(schema: str, table: str) -> str:
    return f"{schema}.{table}"


def sanitize_name(name: str) -> str:
    """A source name -> something usable in slot and publication names."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())[:50]


def check_template(template: str, fields: tuple[str, ...]) -> str:
    try:
        template.format(**{f: "x" for f in fields})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{template!r} is not a valid template: use only {{{'}, {'.join(fields)}}}"
        ) from exc
    return template


class PostgresCdcConfig(PluginConfig):
    tables: list[str] = Field(min_length=1, description="schema.table names to capture")
    database_url: SecretStr | None = Field(None, description="default: database.url")
    slot: str | None = Field(None, description="replication slot; default eventpipe_<name>")
    publication: str | None = Field(None, description="default eventpipe_<name>")
    create_slot: bool = Field(
        True, description="create the slot when missing; false: it must exist"
    )
    create_publication: bool = Field(
        True, description="create the publication when missing; false: it must exist"
    )
    topic_prefix: str | None = Field(None, description="default: the source name")
    topic: str = Field(
        "{prefix}.{schema}.{table}",
        description="topic per table, from {prefix}, {name}, {schema} and {table}",
    )
    type_prefix: str | None = Field(None, description="CloudEvent type prefix; default prefix")
    source_uri: str | None = Field(None, description="CloudEvent source; default /eventpipe/...")
    create_topics: bool = Field(True, description="create the tables' topics when missing")
    topic_partitions: int | None = Field(
        None, ge=1, description="partitions of topics it creates; default kafka.default_partitions"
    )
    mode: Literal["binary", "structured"] = Field(
        "binary", description="Kafka encoding: ce_* headers (binary) or one JSON value"
    )
    snapshot: SnapshotMode = Field(
        "initial",
        description="initial: read the tables first, then stream; never: stream only; "
        "initial_only: read the tables once, no streaming",
    )
    snapshot_chunk_size: int = Field(
        2048, ge=1, le=100_000, description="rows per snapshot query (in key order)"
    )
    batch_size: int = Field(
        5000, ge=1, le=1_000_000, description="changes per slot read (whole transactions)"
    )
    poll_interval_ms: int = Field(
        10, ge=1, le=60_000, description="wait between two reads of the slot when it was empty"
    )
    numeric: NumericMode = Field(
        "string", description="numeric columns as exact strings, or as JSON numbers"
    )
    toast_placeholder: str = Field(
        "__debezium_unavailable_value",
        description="stands for an unchanged TOASTed value the change does not carry",
    )
    key_columns: dict[str, list[str]] = Field(
        default_factory=dict, description="key for tables without a primary key"
    )
    require_replica_identity_full: bool = Field(
        False, description="refuse tables without REPLICA IDENTITY FULL (full before images)"
    )
    tombstones_on_delete: bool = Field(
        False, description="after a delete, a record with its key and no value (compaction)"
    )
    emit_messages: bool = Field(False, description="publish logical decoding messages (op m)")
    message_topic: str = Field(
        "{prefix}.message", description="topic of logical decoding messages ({prefix}, {name})"
    )
    dlq_topic: TopicName | None = Field(None, description="default <name>.dlq")
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="a heartbeat message this often keeps an idle slot advancing"
    )
    stall_timeout_s: float = Field(
        60.0,
        gt=0,
        description="a slot that does not advance this long is stalled (/readyz); at least "
        "twice heartbeat_interval_s",
    )
    standby_poll_s: float = Field(
        1.0, gt=0, description="how often a standby tries to take the slot's lock"
    )
    signal_poll_s: float = Field(
        1.0, gt=0, description="how often eventpipe.cdc_signals is read (ad-hoc snapshots)"
    )

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: list[str]) -> list[str]:
        out = [qualified(*parse_table(t)) for t in v]
        dup = {t for t in out if out.count(t) > 1}
        if dup:
            raise ValueError(f"listed twice: {sorted(dup)}")
        return out

    @field_validator("slot")
    @classmethod
    def _slot(cls, v: str | None) -> str | None:
        if v is not None and not _SLOT.match(v):
            raise ValueError("slot names are 1-63 lower-case letters, digits and '_'")
        return v

    @field_validator("publication")
    @classmethod
    def _publication(cls, v: str | None) -> str | None:
        if v is not None and not _IDENT.match(v):
            raise ValueError("publication names are letters, digits and '_' (at most 63)")
        return v

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        return check_template(v, TOPIC_FIELDS)

    @field_validator("message_topic")
    @classmethod
    def _message_topic(cls, v: str) -> str:
        return check_template(v, ("prefix", "name"))

    @field_validator("key_columns")
    @classmethod
    def _key_columns(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        out = {}
        for table, cols in v.items():
            if not cols:
                raise ValueError(f"{table}: list at least one column")
            out[qualified(*parse_table(table))] = cols
        return out

    @model_validator(mode="after")
    def _cross(self) -> PostgresCdcConfig:
        unknown = sorted(set(self.key_columns) - set(self.tables))
        if unknown:
            raise ValueError(f"key_columns names tables that are not in tables: {unknown}")
        if self.stall_timeout_s < 2 * self.heartbeat_interval_s:
            raise ValueError(
                "stall_timeout_s must be at least twice heartbeat_interval_s, or an idle "
                "slot would raise the stall alarm between heartbeats"
            )
        return self

    # ---------------------------------------------------- name-dependent defaults
    def slot_name(self, name: str) -> str:
        return self.slot or f"eventpipe_{sanitize_name(name)}"

    def publication_name(self, name: str) -> str:
        return self.publication or f"eventpipe_{sanitize_name(name)}"

    def prefix(self, name: str) -> str:
        return self.topic_prefix or name

    def types_prefix(self, name: str) -> str:
        return self.type_prefix or self.prefix(name)

    def source_attr(self, name: str) -> str:
        return self.source_uri or f"/eventpipe/postgres_cdc/{name}"

    def dlq(self, name: str) -> str:
        return self.dlq_topic or f"{name}.dlq"

    def topic_for(self, name: str, schema: str, table: str) -> str:
        return self.topic.format(prefix=self.prefix(name), name=name, schema=schema, table=table)


class PostgresCdcEntry(PostgresCdcConfig, SourceConfig):
    """A ``sources:`` entry of type postgres_cdc."""

    type: Literal["postgres_cdc"] = Field(description="picks this source")
