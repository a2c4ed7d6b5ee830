"""Run the service: open the shared context, build the components of its roles
from the catalog, serve HTTP, and shut down gracefully (drain in-flight requests,
stop the components, flush the producer)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from eventpipe.context import Context
from eventpipe.embedded.process import listen_socket
from eventpipe.errors import ConfigError, RetriableError
from eventpipe.loop_monitor import LoopMonitor
from eventpipe.pipelines.spec import parse_pipelines
from eventpipe.plugin import Catalog, Component
from eventpipe.preflight import Reach
from eventpipe.roles import Role
from eventpipe.service.app import build_app
from eventpipe.service.catalog import CATALOG, PIPELINE, SOURCE_ROLES
from eventpipe.service.checks import run_checks
from eventpipe.service.config import ServiceConfig, service_config
from eventpipe.service.context import open_context
from eventpipe.service.http_server import ServiceRunner
from eventpipe.settings import Settings

log = logging.getLogger("eventpipe.service")


class ComponentFailedError(RetriableError):
    """A component stopped on an error it could not handle.  The process exits
    (status 3) so that its supervisor restarts it: work that was not acknowledged
    is uncommitted and gets done again."""


def roles_to_run(role: Role) -> list[str]:
    return ["ingest", "pipelines", "cdc"] if role == "all" else [role]


def build_components(
    config: ServiceConfig, roles: list[str], ctx: Context, catalog: Catalog = CATALOG
) -> list[Component]:
    """The components of ``roles``, built by their plugins from the typed config:
    sources (in config order) by role, then one per pipeline."""
    out: list[Component] = []
    for role in roles:
        for entry in config.sources:
            if SOURCE_ROLES.get(entry.type) == role:
                out.append(catalog.sources[entry.type].build(entry, entry.name, ctx))
        if role == "pipelines":
            for spec in parse_pipelines(config.pipelines, catalog.sinks):
                out.append(PIPELINE.build(spec, spec.name, ctx))
    return out


class Service:
    """``listener``: the HTTP socket, when the caller took it already (``eventpipe
    dev`` does, before it starts the embedded stack); else :meth:`start` takes it
    before it opens any client connection.  ``settings`` whose sources or pipelines
    are not valid raise :class:`ConfigError` here."""

    def __init__(
        self,
        settings: Settings,
        role: Role = "all",
        *,
        listener: socket.socket | None = None,
        ops_listener: socket.socket | None = None,
        reuse_port: bool = False,
        catalog: Catalog = CATALOG,
    ) -> None:
        self.config = service_config(settings, catalog)
        self.settings: Settings = self.config
        self.catalog = catalog
        self.role = role
        self.listener = listener
        self.ops_listener = ops_listener
        self.reuse_port = reuse_port
        self.ctx: Context | None = None
        self.runner: web.AppRunner | None = None
        self.components: list[Component] = []
        self.port: int | None = None
        self.failure: tuple[str, BaseException] | None = None
        self.failed = asyncio.Event()
        self.monitor = LoopMonitor()

    def _component_failed(self, comp: Component, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = (comp.label, exc)
        self.failed.set()

    async def start(self) -> None:
        if self.listener is None:
            self.listener = http_listener(self.settings, reuse_port=self.reuse_port)
        self.monitor.start()
        try:
            self.ctx = await open_context(self.settings, catalog=self.catalog)
        except BaseException:
            await self.stop()
            raise
        try:
            roles = roles_to_run(self.role)
            await self._preflight(roles)
            self.components = build_components(self.config, roles, self.ctx, self.catalog)
            for comp in self.components:
                comp.on_failure = self._component_failed
                await comp.start()
                log.info("started %s", comp.label)
            # Every role serves the ops endpoints; only ingest serves the APIs.
            await self._start_http(ops_only="ingest" not in roles)
            # Everything allocated so far lives as long as the service: keep it out of
            # the cyclic GC's generations so full collections stay short (tail latency).
            gc.collect()
            gc.freeze()
        except BaseException:
            await self.stop()
            raise

    async def _preflight(self, roles: list[str]) -> None:
        """Every problem that would only show as dead letters (a missing table,
        topic or schema subject), reported at once before any component starts."""
        assert self.ctx is not None
        reach = Reach(self.settings, self.ctx.admin, self.ctx.pool)
        problems = await run_checks(self.config, reach, roles, self.catalog)
        for note in reach.skipped:
            log.warning("start-time check %s", note)
        for path, message in reach.warnings:
            log.warning("%s: %s", path, message)
        if problems:
            raise ConfigError(problems)

    async def _start_http(self, *, ops_only: bool = False) -> None:
        assert self.ctx is not None
        svc = self.settings.service
        app = build_app(self.ctx, ops_only=ops_only, components=self.components)
        self.runner = ServiceRunner(app, svc)
        await self.runner.setup()
        assert self.listener is not None
        sock, self.listener = self.listener, None  # the site owns it from here
        self.port = sock.getsockname()[1]
        await web.SockSite(self.runner, sock).start()
        if self.ops_listener is not None:  # a worker's private port (service.workers)
            ops, self.ops_listener = self.ops_listener, None
            await web.SockSite(self.runner, ops).start()

    @property
    def url(self) -> str:
        host = self.settings.service.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Drain HTTP (in-flight requests finish), stop components, flush the producer."""
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()
        ops, self.ops_listener = self.ops_listener, None
        if ops is not None:
            ops.close()
        for comp in reversed(self.components):
            try:
                await comp.stop()
            except Exception:
                log.exception("stopping %s failed", comp.label)
        self.components = []
        ctx, self.ctx = self.ctx, None
        if ctx is not None:
            await ctx.close()
        self.monitor.stop()


def http_listener(settings: Settings, *, reuse_port: bool = False) -> socket.socket:
    """The service's HTTP socket, taken (bound and listening) now; ``reuse_port``:
    shared with the other workers of ``eventpipe run --workers``."""
    svc = settings.service
    return listen_socket(
        svc.host,
        svc.port,
        "the eventpipe HTTP service",
        "pass --port N (or set EVENTPIPE_SERVICE_PORT)",
        reuse_port=reuse_port,
    )


async def serve_until_signalled(
    service: Service, on_ready: Callable[[Service], Awaitable[None] | None] | None = None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
        if on_ready is not None:
            res = on_ready(service)
            if asyncio.iscoroutine(res):
                await res
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(service.failed.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        log.info("shutting down")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await service.stop()
    if service.failure is not None:
        name, exc = service.failure
        raise ComponentFailedError(
            f"{name} stopped on an unexpected error ({type(exc).__name__}: {exc}); the "
            "service shut down so that its supervisor restarts it (unacknowledged work "
            "is done again); the log has the traceback"
        ) from exc
