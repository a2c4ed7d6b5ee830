"""Conformance profiles of the sources: each makes what its source reads (a signed
webhook POST, a record on a foreign topic, a row in a captured table, an outbox row)
and tells which input an event on the target topic came from."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

from eventpipe.connectors.outbox.api import create_table_sql, publish
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.plugin import Component, Source
from tests.integration.test_cdc_support import drop_cdc_objects
from tests.integration.test_pipeline_support import produce_raw, sql

from .base import SMALL_RECORDS, Running, SourceProfile


def _label(event: CloudEvent) -> str:
    assert isinstance(event.data, dict), event
    return str(event.data["label"])


class WebhookProfile(SourceProfile):
    """Signed POSTs (the ``hmac`` scheme, the delivery id in a header); a body
    without ``label`` breaks the source's schema: 422, dead-lettered."""

    plugin_type = "webhook"
    input_while_stopped = False
    SECRET = "conformance-secret"

    async def setup(self) -> dict[str, Any]:
        self.topic = self.name
        await self.create_topics(self.topic, f"{self.topic}.dlq")
        return {
            "topic": self.topic,
            "verify": {"scheme": "hmac", "secrets": [self.SECRET], "id_header": "x-delivery-id"},
            "validate": {"schema": {"type": "object", "required": ["label"]}},
        }

    async def _post(self, running: Running, delivery: str, body: dict[str, Any]) -> int:
        raw = orjson.dumps(body)
        headers = {
            "x-delivery-id": delivery,
            "x-signature": hmac.new(self.SECRET.encode(), raw, hashlib.sha256).hexdigest(),
            "content-type": "application/json",
        }
        r = await running.client.post(f"/webhooks/{running.source.name}", data=raw, headers=headers)
        await r.read()
        return r.status

    async def make_input(self, running: Running | None, labels: Sequence[str]) -> None:
        assert running is not None, "a webhook provider only sends to a running source"
        for label in labels:
            assert await self._post(running, f"{self.name}-{label}", {"label": label}) == 200

    def label_of(self, event: CloudEvent) -> str:
        return _label(event)

    async def make_bad_input(self, running: Running) -> str | None:
        assert await self._post(running, f"{self.name}-bad", {"nolabel": True}) == 422
        return f"{self.topic}.dlq"


class KafkaSourceProfile(SourceProfile):
    """JSON records on a foreign topic; a value that is not JSON is dead-lettered."""

    plugin_type = "kafka"

    async def setup(self) -> dict[str, Any]:
        self.foreign = f"{self.name}-in"
        self.topic = f"{self.name}-out"
        await self.create_topics(self.foreign, self.topic, f"{self.topic}.dlq")
        # The shortest session timeout: the broker (Tansu) numbers a group's first
        # generation 0, so aiokafka does not leave it on stop, and the next instance
        # waits for the old member's session to expire.
        read = {"topics": [self.foreign], "session_timeout_ms": 1000}
        return {"topic": self.topic, "read": read}

    async def make_input(self, running: Running | None, labels: Sequence[str]) -> None:
        messages = [KafkaMessage(k.encode(), orjson.dumps({"label": k}), []) for k in labels]
        await produce_raw(self.base, self.foreign, messages)

    def label_of(self, event: CloudEvent) -> str:
        return _label(event)

    async def make_bad_input(self, running: Running) -> str | None:
        await produce_raw(self.base, self.foreign, [KafkaMessage(b"bad", b"\xffnot json", [])])
        return f"{self.topic}.dlq"


class _Database(SourceProfile):
    """Sources of PostgreSQL rows."""

    @property
    def url(self) -> str:
        return self.base.database.url.get_secret_value()

    async def ready(self, source: Component) -> None:
        """Until the source reads its slot: a commit from then on is captured."""
        assert isinstance(source, Source)
        for _ in range(600):
            if source.position():
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{source.label} did not start reading: {source.status()}")

    async def teardown(self) -> None:
        await drop_cdc_objects(self.base, self.name, self.name)
        await sql(self.url, f"drop table if exists {self.name}")


class PostgresCdcProfile(_Database):
    """Rows inserted into a captured table (``snapshot: initial``, the default).

    Ready once the initial snapshot is done: until then, a row committed before the
    snapshot reads its chunk is sent twice, as its change (``op: c``) and as a read
    (``op: r``, another id), as in Debezium's incremental snapshots (DBLog); the
    cases here are about the stream (test_cdc_snapshot covers the snapshot)."""

    plugin_type = "postgres_cdc"
    max_record_bytes = SMALL_RECORDS

    async def make_bad_input(self, running: Running) -> str | None:
        """A row whose change event is larger than the producer takes: the broker
        never gets it, the dead letter keeps it (its value stored in PostgreSQL)."""
        await self.make_input(running, ["x" * 2 * SMALL_RECORDS])
        return f"{self.name}.dlq"

    async def ready(self, source: Component) -> None:
        await super().ready(source)
        query = (
            "select count(*) from eventpipe.cdc_snapshots "
            "where slot = %s and kind = 'initial' and status <> 'done'"
        )
        for _ in range(600):
            if (await sql(self.url, query, (self.name,)))[0][0] == 0:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{source.label}: the initial snapshot did not finish")

    async def setup(self) -> dict[str, Any]:
        await sql(self.url, f"create table {self.name} (id serial primary key, label text)")
        self.topic = f"{self.name}.public.{self.name}"
        return {
            "tables": [f"public.{self.name}"],
            "slot": self.name,
            "publication": self.name,
            "topic_prefix": self.name,
        }

    async def make_input(self, running: Running | None, labels: Sequence[str]) -> None:
        insert = f"insert into {self.name} (label) values (%s)".encode()
        async with await psycopg.AsyncConnection.connect(self.url) as conn, conn.transaction():
            for label in labels:
                await conn.execute(insert, (label,))

    def label_of(self, event: CloudEvent) -> str:
        assert isinstance(event.data, dict), event
        return str(event.data["after"]["label"])


class OutboxProfile(_Database):
    """Rows an application writes to its outbox table (the default mode: cdc)."""

    plugin_type = "outbox"

    def entry(self) -> dict[str, Any]:
        return {"slot": self.name, "publication": self.name}

    async def setup(self) -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(create_table_sql(f"public.{self.name}"))
        self.topic = self.name
        await self.create_topics(self.topic)
        return {"table": f"public.{self.name}", "topic": self.topic, **self.entry()}

    async def make_input(self, running: Running | None, labels: Sequence[str]) -> None:
        table = f"public.{self.name}"
        async with await psycopg.AsyncConnection.connect(self.url) as conn, conn.transaction():
            for label in labels:
                data = {"label": label}
                event = CloudEvent.create("conformance.item", "/c", data, id=f"{self.name}-{label}")
                await publish(
                    conn, event, aggregate_type="conformance", aggregate_id=label, table=table
                )

    def label_of(self, event: CloudEvent) -> str:
        return _label(event)

    async def make_bad_input(self, running: Running) -> str | None:
        """A row an application wrote by hand, its ``ce_time`` not a timestamp: no
        CloudEvent can be made of it."""
        insert = (
            f"insert into public.{self.name} (id, aggregatetype, aggregateid, type, payload,"
            " headers) values (%s, 'conformance', 'bad', 'conformance.item', %s, %s)"
        )
        headers = orjson.dumps({"ce_source": "/c", "ce_time": "yesterday"}).decode()
        await sql(self.url, insert, (f"{self.name}-bad", '{"label": "bad"}', headers))
        return f"{self.name}.dlq"


class OutboxPollProfile(OutboxProfile):
    """The same, relayed by polling (databases without logical replication)."""

    variant = "poll"

    def entry(self) -> dict[str, Any]:
        return {"mode": "poll", "poll_interval_ms": 20}

    async def ready(self, source: Component) -> None:
        return None  # polls from the table's first row: nothing to miss
