"""The ``outbox`` sink: rows and outgoing events in one Postgres transaction.

```yaml
sinks:
  - outbox:
      aggregate_type: '"order"'        # jq over the event's JSON form
      aggregate_id: .data.order_id     # jq; default: the partitionkey, else the id
      rows:                            # optional: rows written in the same transaction
        table: orders
        columns: {id: .data.order_id, total: .data.total}
```

Each output event is written to the outbox table with
``eventpipe.connectors.outbox.api.publish(conn, event, aggregate_type=...,
aggregate_id=...)`` -- the same function applications use, and the outbox relay
(CDC issue) publishes those rows in order.  The consumed offsets are marked in
the same transaction, as in the ``postgres`` sink, so the effect is
exactly-once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg
from eventpipe.transforms.event_form import to_event_form
from eventpipe.transforms.jq_engine import (
    DEFAULT_ENGINE,
    NO_OUTPUT,
    EngineName,
    JqCompileError,
    compile_program,
)
from pydantic import model_validator

from eventpipe.base import PluginConfig, sinks
from eventpipe.errors import PermanentError

from .api import DeliveryItem
from .postgres import PostgresSink, PostgresSinkConfig


class OutboxSinkConfig(PluginConfig):
    aggregate_type: str
    aggregate_id: str = ".partitionkey // .id"
    rows: PostgresSinkConfig | None = None
    engine: EngineName = DEFAULT_ENGINE

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


def _publisher() -> Any:
    """The shared outbox writer (connectors/outbox, owned by the CDC / outbox work)."""
    try:
        from eventpipe.connectors.outbox.api import publish
    except ImportError as exc:  # pragma: no cover - depends on the outbox package
        raise PermanentError(
            "the outbox sink needs eventpipe.connectors.outbox.publish, which is not installed"
        ) from exc
    return publish


@sinks.register("outbox")
class OutboxSink(PostgresSink):
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

    async def start(self) -> None:
        self._publish = _publisher()
        await super().start()

    async def _also_write(
        self,
        conn: psycopg.AsyncConnection[Any],
        items: Sequence[DeliveryItem],
        failed: dict[int, BaseException],
    ) -> None:
        publish = self._publish
        for it in items:
            if it.index in failed:
                continue
            for ev in it.events:
                found = self._agg.first(to_event_form(ev))
                if found is NO_OUTPUT or not found[0] or not found[1]:
                    failed[it.index] = OutboxMappingError(
                        f"sink {self.label}: aggregate_type / aggregate_id yielded nothing"
                    )
                    break
                agg_type, agg_id = found[0][0], found[1][0]
                await publish(conn, ev, aggregate_type=str(agg_type), aggregate_id=str(agg_id))


__all__ = ["OutboxSink", "OutboxSinkConfig"]
