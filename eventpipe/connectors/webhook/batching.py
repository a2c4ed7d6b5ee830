"""Group commit: concurrent requests share one database query or one produce.

``await coalescer.submit(item)`` queues the item; items submitted in the same
event-loop turn, and all that arrive while a batch is in flight, go to the
handler together as the next batch.  At most ``max_inflight`` batches run at once,
so under load batches grow instead of round trips multiplying.  A waiter that is
cancelled (its request timed out) leaves its item in the batch: the handler's
effect cannot be taken back item by item, and the id-keyed design makes a late
write harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("eventpipe.webhook")


class Coalescer(Generic[T, R]):
    def __init__(
        self,
        handler: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 512,
        max_inflight: int = 1,
        name: str = "batch",
    ) -> None:
        self._handler = handler
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._name = name
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._inflight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        # get_running_loop() costs a getpid() system call on CPython 3.11: look it up once
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pending(self) -> int:
        return len(self._items)

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the future gets its result (or the batch's exception)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(fut)
        if not self._scheduled and self._inflight < self._max_inflight:
            self._scheduled = True
            loop.call_soon(self._kick)
        return fut

    def _kick(self) -> None:
        self._scheduled = False
        while self._items and self._inflight < self._max_inflight:
            n = self._max_batch
            items, self._items = self._items[:n], self._items[n:]
            futures, self._futures = self._futures[:n], self._futures[n:]
            self._inflight += 1
            assert self._loop is not None
            task = self._loop.create_task(self._run(items, futures))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        try:
            results = await self._handler(items)
        except BaseException as exc:  # every waiter learns why; nothing is swallowed
            for fut in futures:
                if fut.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    fut.cancel()
                else:
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for fut, result in zip(futures, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
        finally:
            self._inflight -= 1
            if self._items and not self._scheduled and self._loop is not None:
                self._scheduled = True
                self._loop.call_soon(self._kick)

    async def drain(self) -> None:
        """Wait for queued and running batches (used when stopping)."""
        while self._items or self._tasks:
            if self._items and not self._tasks and not self._scheduled:
                self._kick()
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await asyncio.sleep(0)
