"""The supervisor process: the workers, the merged ops surface, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence

from aiohttp import web

from eventpipe.embedded.process import listen_socket
from eventpipe.settings import Settings

from .ops_api import build_ops_app
from .supervisor import RestartBackoff, Supervisor, worker_argv

log = logging.getLogger(__name__)
READY_WITHIN_S = 300.0  # past it the supervisor says so, and keeps restarting


def ops_port(settings: Settings, public_port: int) -> int:
    """``service.ops_port``, else the public port + 1."""
    svc = settings.service
    return svc.ops_port if svc.ops_port is not None else public_port + 1


async def supervise(
    settings: Settings,
    argv: Sequence[str],
    count: int,
    on_ready: Callable[[Supervisor, str], None],
    *,
    backoff: RestartBackoff | None = None,
) -> int:
    """Run ``count`` workers (``eventpipe`` + ``argv``) until SIGTERM or SIGINT;
    the exit status."""
    loop = asyncio.get_running_loop()
    sup = Supervisor(settings, worker_argv(argv), count, backoff=backoff)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, sup.request_stop)
    runner: web.AppRunner | None = None
    try:
        svc = settings.service
        sock = listen_socket(
            svc.host,
            ops_port(settings, sup.reserve()),
            "the supervisor's ops endpoints (/metrics, /v1/status)",
            "pass --ops-port N (or set service.ops_port; 0: any free port)",
        )
        host = "127.0.0.1" if svc.host in ("0.0.0.0", "::") else svc.host
        ops_url = sup.ops_url = f"http://{host}:{sock.getsockname()[1]}"
        runner = web.AppRunner(build_ops_app(sup), handle_signals=False, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        await sup.start()  # the workers' consoles read the merged status at ops_url
        ready = asyncio.create_task(sup.wait_ready(READY_WITHIN_S))

        def announce(task: asyncio.Task[bool]) -> None:
            if not task.cancelled() and task.result():
                on_ready(sup, ops_url)
            elif not sup.stopping.is_set():
                log.warning("not every worker serves %.0fs after the start", READY_WITHIN_S)

        ready.add_done_callback(announce)
        code = await sup.run_until_stopped()
        ready.cancel()
        return code
    except BaseException:
        if sup.workers and not sup.stopping.is_set():
            sup.request_stop()
            await sup.run_until_stopped()
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        if runner is not None:
            await runner.cleanup()
        sup.close()
