"""Small helpers integration tests share: read back what is on a topic; serve an
app as the service does."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import from_kafka
from eventpipe.service.http_server import ServiceRunner
from eventpipe.settings import ServiceSettings


class ServiceTestServer(TestServer):
    """aiohttp's TestServer, serving through the service's own runner (its limits,
    bodies left compressed for the handlers to decode)."""

    def __init__(self, app: web.Application, service: ServiceSettings, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.service = service

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return ServiceRunner(self.app, self.service)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` served on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def receiving_posts(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], path: str = "/hook"
) -> AsyncIterator[str]:
    """A server that hands every POST to ``path`` to ``handler``; yields its URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    async with serving(app) as url:
        yield url + path


Records = list[ConsumerRecord[bytes, bytes]]


async def read_records(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout: float = 20.0,
    *,
    until: Callable[[Records], bool] | None = None,
) -> Records:
    """Every record on ``topic`` from the beginning, waiting until ``expected`` arrived,
    or until ``until(records)`` holds when given (and a short while after, so extra
    records are seen too)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: Records = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle: float | None = None
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
            if until(out) if until is not None else len(out) >= expected:
                settle = settle or loop.time() + 0.5
                if loop.time() >= settle:
                    break
    finally:
        await consumer.stop()
    return out


async def read_events(
    bootstrap: str, topic: str, expected: int, timeout: float = 20.0
) -> list[CloudEvent]:
    recs = await read_records(bootstrap, topic, expected, timeout)
    return [from_kafka(r.key, r.value, list(r.headers)) for r in recs]


async def wait_for(
    what: Callable[[], bool], about: Callable[[], object], timeout: float = 30.0
) -> None:
    """Until ``what()`` holds; fails after ``timeout`` seconds showing ``about()``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not what():
        assert loop.time() < deadline, f"timed out after {timeout:g}s: {about()}"
        await asyncio.sleep(0.05)


def released(objects: list[Any]) -> list[str]:
    """Drop ``objects`` (hold no other reference to them) and collect garbage: the
    ResourceWarnings that raised (something they opened was left open)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        objects.clear()
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


async def tasks_left(before: set[asyncio.Task[Any]], grace: float = 2.0) -> list[str]:
    """Tasks started since ``before`` was taken (``asyncio.all_tasks()``) that are
    still running after ``grace`` seconds: what a stopped component left behind."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while True:
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        left = [t for t in left if t is not asyncio.current_task()]
        if not left or loop.time() >= deadline:
            return sorted(repr(t.get_coro()) for t in left)
        await asyncio.sleep(0.05)


SERVICE_ENV = ("EVENTPIPE_SERVICE_ADMIN_TOKEN", "EVENTPIPE_SERVICE_PORT", "EVENTPIPE_SERVICE_HOST")
"""Variables that would point `eventpipe status` elsewhere than a test says."""
