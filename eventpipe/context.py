"""What the service shares with the parts it runs: settings, the producer, topic
admin, the database pool, and the catalog of plugins it was composed with.

A :class:`Context` is built once by the roof (``eventpipe.service.context.
open_context`` for the service; the backfill and tests build their own) and handed
to every plugin's factory; features never open these clients themselves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eventpipe.plugin import Catalog

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from eventpipe.kafka.admin import TopicAdmin
    from eventpipe.publisher import Publisher
    from eventpipe.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Context:
    settings: Settings
    publisher: Publisher
    admin: TopicAdmin
    pool: AsyncConnectionPool | None = None
    catalog: Catalog = field(default_factory=Catalog)
    """The sources and sinks by type (the roof's ``eventpipe.service.catalog``): a
    pipeline builds its sinks from it, never by importing a connector."""
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Awaited by :meth:`close` once the producer flushed, before the pool closes
    (the trace index writer: the producer's last acknowledgements are in it)."""

    async def close(self) -> None:
        """Flush the producer, run the closers, then close clients and the pool.
        Idempotent."""
        with contextlib.suppress(Exception):
            await self.publisher.stop()
        closers, self.closers = self.closers, []
        for closer in closers:
            with contextlib.suppress(Exception):
                await closer()
        with contextlib.suppress(Exception):
            await self.admin.stop()
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close()
