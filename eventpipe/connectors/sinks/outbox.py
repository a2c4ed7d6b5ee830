"""The ``outbox`` sink: rows and outgoing events in one Postgres transaction.

An example is ``PLUGIN``'s ``example`` (shown in docs/reference.md#sink-outbox with
every key, and loaded by tests/unit/test_reference.py).

Each output event is written to the outbox table with
``eventpipe.connectors.outbox.api.publish_many`` -- what applications use, and
the outbox relay publishes those rows in order.  A record whose outbox row cannot
be made (no aggregate type / id, data that is not JSON) is dead-lettered whole:
neither its table rows nor its outbox rows are written.  The consumed offsets are
marked in the same transaction, as in the ``postgres`` sink, so the effect is
exactly-once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import psycopg
from pydantic import Field, model_validator

from eventpipe.connectors.outbox.api import publish_many, row_values
from eventpipe.envelope import CloudEvent
from eventpipe.errors import PermanentError
from eventpipe.plugin import PluginConfig
from eventpipe.sink import DeliveryItem, SinkPlugin
from eventpipe.transforms.event_form import to_event_form
from eventpipe.transforms.jq_engine import (
    DEFAULT_ENGINE,
    NO_OUTPUT,
    EngineName,
    JqCompileError,
    compile_program,
)

from .postgres import PostgresSink, PostgresSinkConfig, rows_preflight

if TYPE_CHECKING:
    from eventpipe.preflight import Reach


class OutboxSinkConfig(PluginConfig):
    aggregate_type: str = Field(description="jq over the event giving the row's aggregatetype")
    aggregate_id: str = Field(
        ".partitionkey // .id", description="jq giving the row's aggregateid (the record key)"
    )
    rows: PostgresSinkConfig | None = Field(
        None, description="table rows written in the same transaction"
    )
    engine: EngineName = Field(DEFAULT_ENGINE, description="jq engine: jaq (jaq-rs) or jq (libjq)")

    @model_validator(mode="after")
    def _programs(self) -> OutboxSinkConfig:
        for field in ("aggregate_type", "aggregate_id"):
            try:
                compile_program(getattr(self, field), self.engine)
            except JqCompileError as exc:
                raise ValueError(f"{field}: {exc.message}") from exc
        return self


class OutboxMappingError(PermanentError):
    pass


_OUTBOX = "outbox"  # DeliveryItem.extra: the record's (event, aggregate type, id)


class OutboxSink(PostgresSink):
    type_name = "outbox"
    Config = OutboxSinkConfig  # type: ignore[assignment]
    exactly_once: ClassVar[bool] = True

    def __init__(self, config: OutboxSinkConfig, *, name: str | None = None) -> None:
        super(PostgresSink, self).__init__(config, name=name)
        self._pool = None
        self._own_pool = False
        self._url = None
        self.columns = []
        self.outbox_cfg = config
        if config.rows is not None:
            self._setup_rows(config.rows)
        program = (
            "["
            + ", ".join(f"[first(({e}))]" for e in (config.aggregate_type, config.aggregate_id))
            + "]"
        )
        self._agg = compile_program(program, config.engine)

    @classmethod
    async def preflight(cls, config: Any, reach: Reach) -> list[tuple[str, str]]:
        if config.rows is None:
            return []
        return [(f"rows.{p}", m) for p, m in await rows_preflight(config.rows, reach)]

    def _check_items(self, items: Sequence[DeliveryItem], failed: dict[int, BaseException]) -> None:
        # Every outbox row of a record is made (and checked) before any row of the
        # batch is written: a record whose outbox row cannot be made is dead-lettered
        # whole, its table rows not written either.
        for it in items:
            if it.index in failed:
                continue
            made: list[tuple[CloudEvent, str, str]] = []
            try:
                for ev in it.events:
                    found = self._agg.first(to_event_form(ev))
                    values = [] if found is NO_OUTPUT else [f[0] if f else None for f in found]
                    if len(values) != 2 or any(v is None or v == "" for v in values):
                        raise OutboxMappingError(
                            f"sink {self.label}: aggregate_type / aggregate_id yielded "
                            "nothing, null or an empty string"
                        )
                    agg_type, agg_id = str(values[0]), str(values[1])
                    row_values(ev, agg_type, agg_id)  # raises what the insert would
                    made.append((ev, agg_type, agg_id))
            except OutboxMappingError as exc:
                failed[it.index] = exc
                continue
            except PermanentError as exc:  # a jq runtime error, data that is not JSON
                failed[it.index] = OutboxMappingError(f"sink {self.label}: {exc}")
                continue
            it.extra[_OUTBOX] = made

    async def _also_write(
        self,
        conn: psycopg.AsyncConnection[Any],
        items: Sequence[DeliveryItem],
        failed: dict[int, BaseException],
    ) -> None:
        made: list[tuple[CloudEvent, str, str]] = []
        for it in items:
            if it.index not in failed:
                made.extend(cast(list[tuple[CloudEvent, str, str]], it.extra.get(_OUTBOX, [])))
        await publish_many(conn, made)


PLUGIN = SinkPlugin.of(
    OutboxSink,
    "outbox rows (and optional table rows) in one PostgreSQL transaction, for the outbox relay",
    example="""\
- outbox:
    aggregate_type: '"order"'         # jq over the event's JSON form
    aggregate_id: .data.order_id      # jq; default: the partitionkey, else the id
    rows:                             # optional: rows written in the same transaction
      table: orders
      columns: {id: .data.order_id, total: .data.total}
""",
)


__all__ = ["OutboxSink", "OutboxSinkConfig"]
