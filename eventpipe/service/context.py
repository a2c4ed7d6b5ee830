"""Opening the service's :class:`~eventpipe.context.Context`: the pool (migrated),
the producer and topic admin (waiting for a broker that comes up after us), and
the configured topics."""

from __future__ import annotations

import asyncio
import logging

from eventpipe.context import Context
from eventpipe.db.migrations import apply_migrations
from eventpipe.db.pool import open_pool
from eventpipe.errors import BrokerUnavailableError
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.plugin import Catalog
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from eventpipe.trace.writer import TraceWriter

from .catalog import CATALOG

log = logging.getLogger(__name__)


async def open_context(
    settings: Settings,
    *,
    migrate: bool = True,
    broker_wait_s: float = 30.0,
    catalog: Catalog = CATALOG,
) -> Context:
    pool = await open_pool(settings.database)
    ctx = Context(settings, Publisher(settings), TopicAdmin(settings.kafka), pool, catalog)
    try:
        if migrate:
            applied = await apply_migrations(settings.database.url.get_secret_value())
            if applied:
                log.info("applied migrations %s", applied)
        if settings.trace.enabled:
            # the service's producers tell it what they wrote; stopped after the
            # producer flushed, so the last acknowledgements are written too
            ctx.publisher.trace = writer = TraceWriter(pool, settings.trace)
            ctx.closers.append(writer.stop)
            await writer.start()
        await _start_kafka(ctx, broker_wait_s)
        if settings.topics:
            created = await ctx.admin.ensure_topics(settings.topics)
            if created:
                log.info("created topics %s", created)
    except BaseException:
        await ctx.close()
        raise
    return ctx


async def _start_kafka(ctx: Context, wait_s: float) -> None:
    """The broker may come up after us (compose): retry for ``wait_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = 0.2
    while True:
        try:
            await ctx.admin.start()
            await ctx.publisher.start()
            return
        except BrokerUnavailableError:
            if loop.time() + delay > deadline:
                raise
            log.warning("broker %s not reachable yet; retrying", ctx.settings.kafka.bootstrap)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
