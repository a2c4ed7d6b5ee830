"""Writing events to the outbox, inside the application's own transaction.

    async with conn.transaction():
        await conn.execute("update orders set status = 'paid' where id = %s", (order_id,))
        await outbox.publish(
            conn,
            CloudEvent.create("shop.order.paid", "/shop", {"order": order_id}),
            aggregate_type="order",
            aggregate_id=str(order_id),
        )

Either both commit or neither does.  Writing an event whose id is already in the
outbox is a no-op (the row there is that event): a sink that writes a record
again, or an application that retries its transaction, does not fail on it.
The relay later publishes the event to
``outbox.event.order`` (by default) with key ``order_id`` and the event's own id,
so consumers deduplicate a re-send after a relay crash.

The row keeps the whole CloudEvent: ``id``, ``type`` and ``payload`` (the data)
in their columns, the other attributes in ``headers`` as ``ce_<name>`` entries
(their binary-mode Kafka header names).  Other ``headers`` entries become plain
Kafka headers on the record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.event import OPTIONAL, format_time, is_json_content_type
from eventpipe.envelope.json import canonical_string
from eventpipe.errors import InvalidEventError

DEFAULT_TABLE = "eventpipe.outbox"
CE_PREFIX = "ce_"


def table_ident(table: str) -> sql.Identifier:
    schema, dot, name = table.partition(".")
    return sql.Identifier(schema, name) if dot else sql.Identifier(table)


def ce_headers(event: CloudEvent) -> dict[str, str]:
    """The event's attributes other than id, type and data, as ``ce_*`` entries."""
    out = {"ce_source": event.source}
    for name in OPTIONAL:
        value = getattr(event, name)
        if value is not None:
            out[CE_PREFIX + name] = format_time(value) if name == "time" else value
    for name, value in event.extensions.items():
        if name != "partitionkey":  # the aggregate id is the key
            out[CE_PREFIX + name] = canonical_string(value)
    return out


def row_values(
    event: CloudEvent,
    aggregate_type: str,
    aggregate_id: str,
    headers: Mapping[str, str] | None = None,
) -> tuple[Any, ...]:
    if not aggregate_type or not aggregate_id:
        raise InvalidEventError("aggregate", "aggregate_type and aggregate_id are required")
    if isinstance(event.data, bytes | bytearray | memoryview) or not is_json_content_type(
        event.datacontenttype
    ):
        raise InvalidEventError(
            "data", "outbox payloads are JSON: pass a JSON value with a JSON content type"
        )
    event.validate()
    h: dict[str, str] = {}
    for k, v in (headers or {}).items():
        if k.lower().startswith(CE_PREFIX):
            raise InvalidEventError(
                k, "ce_* headers are the event's own attributes; set them on it"
            )
        h[k] = str(v)
    h.update(ce_headers(event))
    return (
        event.id,
        aggregate_type,
        aggregate_id,
        event.type,
        None if event.data is None else Jsonb(event.data),
        Jsonb(h),
    )


def _insert(table: str) -> sql.Composed:
    return sql.SQL(
        "insert into {} (id, aggregatetype, aggregateid, type, payload, headers)"
        " values (%s, %s, %s, %s, %s, %s) on conflict (id) do nothing"
    ).format(table_ident(table))


async def publish(
    conn: Any,
    event: CloudEvent,
    *,
    aggregate_type: str,
    aggregate_id: str,
    headers: Mapping[str, str] | None = None,
    table: str = DEFAULT_TABLE,
) -> None:
    """Add ``event`` to the outbox in ``conn``'s current transaction (a psycopg
    ``AsyncConnection`` or ``AsyncCursor``).  Nothing is sent until it commits."""
    await conn.execute(_insert(table), row_values(event, aggregate_type, aggregate_id, headers))


async def publish_many(
    conn: Any,
    items: Sequence[tuple[CloudEvent, str, str]],
    *,
    table: str = DEFAULT_TABLE,
) -> None:
    """Several ``(event, aggregate_type, aggregate_id)`` in one round trip."""
    if not items:
        return
    rows = [row_values(e, t, i) for e, t, i in items]
    if not hasattr(conn, "cursor"):  # already a cursor
        await conn.executemany(_insert(table), rows)
        return
    async with conn.cursor() as cur:
        await cur.executemany(_insert(table), rows)


def create_table_sql(table: str) -> sql.Composed:
    """The outbox table (the same as migration 0005's ``eventpipe.outbox``), for
    applications that keep their outbox in another schema or database."""
    name = table.partition(".")[2] or table
    return sql.SQL(
        """
create table if not exists {table} (
    seq bigint generated always as identity,
    id text primary key,
    aggregatetype text not null,
    aggregateid text not null,
    type text not null,
    payload jsonb,
    headers jsonb not null default '{{}}'::jsonb,
    created_at timestamptz not null default now(),
    published_at timestamptz
);
create index if not exists {index} on {table} (seq) where published_at is null
"""
    ).format(table=table_ident(table), index=sql.Identifier(f"{name}_unpublished"))
