"""Conformance profiles of the sinks: each makes its destination on the test's real
PostgreSQL, broker or HTTP receiver, reads back what the sink did there, and says
which event the destination refuses."""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from aiohttp import web

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import from_kafka
from eventpipe.settings import Settings
from tests.helpers import read_records, receiving_posts
from tests.integration.test_pipeline_support import sql

from .base import SMALL_RECORDS, Delivery, Effect, SinkProfile

BAD_TYPE = "conformance.refused"


class _Table(SinkProfile):
    """Sinks into a PostgreSQL table of the test's database."""

    @property
    def url(self) -> str:
        return self.base.database.url.get_secret_value()

    async def teardown(self) -> None:
        await sql(self.url, f"drop table if exists {self.name}")


class PostgresProfile(_Table):
    """Rows in a table without a unique key: only the sink's offset marks keep a
    redelivered batch from being written twice.  A negative ``n`` breaks a check."""

    plugin_type = "postgres"
    delivery: ClassVar[Delivery] = "exactly_once"

    async def setup(self) -> dict[str, Any]:
        await sql(self.url, f"create table {self.name} (event_id text, n int check (n >= 0))")
        return {"table": f"public.{self.name}", "columns": {"event_id": ".id", "n": ".data.n"}}

    def bad_event(self) -> CloudEvent:
        return CloudEvent.create("conformance.item", "/conformance", {"n": -1}, id=f"{self.name}-x")

    async def effects(self, expected: int) -> list[Effect]:
        rows = await sql(self.url, f"select event_id, n from {self.name}")
        return [Effect(r[0], r[0], r[1]) for r in rows]


class PostgresUpsertProfile(PostgresProfile):
    """Upserts (COPY into a staging table, then ``insert ... on conflict``) through
    the sink's own pool (``url:``), into a table keyed on the event id."""

    variant = "upsert"

    async def setup(self) -> dict[str, Any]:
        await sql(
            self.url, f"create table {self.name} (event_id text primary key, n int check (n >= 0))"
        )
        columns = {"event_id": ".id", "n": ".data.n"}
        table = f"public.{self.name}"
        return {
            "table": table,
            "columns": columns,
            "mode": "upsert",
            "key": ["event_id"],
            "url": self.url,
        }


class AuditRowsProfile(_Table):
    """The "write your own sink" example (tests/plugins/example_sink.py): its table
    keys rows on the event id; a type of 20 characters or more breaks a check."""

    plugin_type = "audit_rows"
    delivery: ClassVar[Delivery] = "idempotent"

    async def setup(self) -> dict[str, Any]:
        await sql(
            self.url,
            f"create table {self.name} (event_id text primary key, "
            "type text not null check (length(type) < 20), source text not null, data jsonb)",
        )
        return {"table": f"public.{self.name}"}

    def bad_event(self) -> CloudEvent:
        return CloudEvent.create("conformance." + "x" * 20, "/conformance", {}, id=f"{self.name}-x")

    async def effects(self, expected: int) -> list[Effect]:
        rows = await sql(self.url, f"select event_id, data from {self.name}")
        return [Effect(r[0], r[0], r[1]) for r in rows]


class OutboxSinkProfile(_Table):
    """Outbox rows of the test's own aggregate type; an event without ``data.key``
    has no aggregate id."""

    plugin_type = "outbox"
    delivery: ClassVar[Delivery] = "exactly_once"

    async def setup(self) -> dict[str, Any]:
        return {"aggregate_type": f'"{self.name}"', "aggregate_id": ".data.key"}

    def bad_event(self) -> CloudEvent:
        return CloudEvent.create("conformance.item", "/conformance", {"n": -1}, id=f"{self.name}-x")

    async def effects(self, expected: int) -> list[Effect]:
        rows = await sql(
            self.url,
            "select id, aggregateid, payload from eventpipe.outbox where aggregatetype = %s",
            (self.name,),
        )
        return [Effect(r[0], r[0], (r[1], r[2])) for r in rows]

    async def teardown(self) -> None:
        await sql(self.url, "delete from eventpipe.outbox where aggregatetype = %s", (self.name,))


class TopicProfile(SinkProfile):
    """Records on a topic of the test's broker.  The sink's producer takes records of
    8 KiB at most (``kafka.max_request_size``), so a 16 KiB event is refused alone;
    the test's own producer (1 MiB) can still feed it to a pipeline."""

    plugin_type = "topic"
    delivery: ClassVar[Delivery] = "at_least_once"
    max_record_bytes = SMALL_RECORDS

    async def setup(self) -> dict[str, Any]:
        await self.create_topics(self.name)
        return {"topic": self.name}

    def bad_event(self) -> CloudEvent:
        data = {"n": -1, "pad": "x" * 2 * SMALL_RECORDS}
        return CloudEvent.create("conformance.item", "/conformance", data, id=f"{self.name}-x")

    async def effects(self, expected: int) -> list[Effect]:
        out = []
        for r in await read_records(self.base.kafka.bootstrap, self.name, expected, timeout=20):
            event = from_kafka(r.key, r.value, list(r.headers))
            out.append(Effect(event.id, event.id, (r.key, r.value, sorted(r.headers))))
        return out


class HttpProfile(SinkProfile):
    """POSTs to a real aiohttp server, which refuses an event of type
    :data:`BAD_TYPE` with 400 and takes the others (204)."""

    plugin_type = "http"
    delivery: ClassVar[Delivery] = "at_least_once"

    def __init__(self, settings: Settings, name: str) -> None:
        super().__init__(settings, name)
        self.taken: list[Effect] = []
        self.server = contextlib.AsyncExitStack()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("ce-type") == BAD_TYPE:
            return web.json_response({"title": "refused"}, status=400)
        ce = sorted((k.lower(), v) for k, v in request.headers.items() if k.lower()[:3] == "ce-")
        effect = Effect(request.headers["ce-id"], request.headers["Idempotency-Key"], (ce, body))
        self.taken.append(effect)
        return web.Response(status=204)

    async def setup(self) -> dict[str, Any]:
        url = await self.server.enter_async_context(receiving_posts(self._receive))
        return {"url": url, "timeout": "5s"}

    def bad_event(self) -> CloudEvent:
        return CloudEvent.create(BAD_TYPE, "/conformance", {"n": -1}, id=f"{self.name}-x")

    async def effects(self, expected: int) -> list[Effect]:
        return list(self.taken)

    async def teardown(self) -> None:
        await self.server.aclose()
