"""What the service's parts share: settings, the producer, topic admin, the pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from eventpipe.db.migrations import apply_migrations
from eventpipe.db.pool import open_pool
from eventpipe.errors import BrokerUnavailableError
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from eventpipe.trace.writer import TraceWriter

log = logging.getLogger("eventpipe.service")


@dataclass
class ServiceContext:
    settings: Settings
    publisher: Publisher
    admin: TopicAdmin
    pool: AsyncConnectionPool | None = None
    closers: list[object] = field(default_factory=list)

    @classmethod
    async def open(
        cls, settings: Settings, *, migrate: bool = True, broker_wait_s: float = 30.0
    ) -> ServiceContext:
        pool = await open_pool(settings.database)
        ctx = cls(settings, Publisher(settings), TopicAdmin(settings.kafka), pool)
        try:
            if migrate:
                applied = await apply_migrations(settings.database.url.get_secret_value())
                if applied:
                    log.info("applied migrations %s", applied)
            if settings.trace.enabled:
                ctx.publisher.trace = writer = TraceWriter(pool, settings.trace)
                await writer.start()
            await ctx._start_kafka(broker_wait_s)
            if settings.topics:
                created = await ctx.admin.ensure_topics(settings.topics)
                if created:
                    log.info("created topics %s", created)
        except BaseException:
            await ctx.close()
            raise
        return ctx

    async def _start_kafka(self, wait_s: float) -> None:
        """The broker may come up after us (compose): retry for ``wait_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        delay = 0.2
        while True:
            try:
                await self.admin.start()
                await self.publisher.start()
                return
            except BrokerUnavailableError:
                if loop.time() + delay > deadline:
                    raise
                log.warning("broker %s not reachable yet; retrying", self.settings.kafka.bootstrap)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def close(self) -> None:
        """Flush the producer and the trace index, then close clients and the pool.
        Idempotent."""
        with contextlib.suppress(Exception):
            await self.publisher.stop()
        trace, self.publisher.trace = self.publisher.trace, None
        if isinstance(trace, TraceWriter):  # after the producer: its last acks are in
            await trace.stop()
        with contextlib.suppress(Exception):
            await self.admin.stop()
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close()
