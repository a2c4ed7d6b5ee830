"""The supervisor of ``eventpipe run --workers N``: starts the workers, restarts one
that dies, and stops them all with a drain.

A worker that exits while the supervisor is not stopping is started again after
:class:`RestartBackoff`'s wait (logged, and counted in
``eventpipe_worker_restarts_total``).  A worker whose config is refused (exit 2)
before it ever served is not restarted: every worker has the same config, so the
supervisor stops the others and exits 2.  On SIGTERM or SIGINT the supervisor
sends SIGTERM to every worker (each drains: requests in flight answered,
components stopped, the producer flushed) and exits once all have exited; a
worker still running ``service.shutdown_timeout_s`` + :data:`STOP_MARGIN_S` later
is killed.  A second signal kills them at once.

The workers run in their own session, so a Ctrl-C in the terminal reaches the
supervisor alone, which forwards one SIGTERM; a worker whose supervisor is killed
stops by itself (:func:`.slot.stop_when_orphaned`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from eventpipe.embedded.process import bound_socket
from eventpipe.settings import Settings

from .slot import WorkerSlot

log = logging.getLogger(__name__)
STOP_MARGIN_S = 30.0  # beyond service.shutdown_timeout_s: components stop, the producer flushes
READY_POLL_S = 0.2
CONFIG_REFUSED = 2  # the exit status of `eventpipe run` whose config is refused


@dataclass
class RestartBackoff:
    """The wait before a worker is started again: ``initial_s`` after its first
    failure, doubled after each failure in a row, at most ``cap_s``.  A worker that
    ran ``stable_s`` or longer before it exited starts the series again."""

    initial_s: float = 0.5
    cap_s: float = 30.0
    stable_s: float = 60.0
    failures: int = 0

    def next_wait(self, uptime_s: float) -> float:
        """The wait after a worker exited having run ``uptime_s``."""
        if uptime_s >= self.stable_s:
            self.failures = 0
        self.failures += 1
        return min(self.cap_s, self.initial_s * 2 ** (self.failures - 1))


@dataclass
class Worker:
    """One worker slot: its private ops socket (kept across restarts), the process
    running in it now, and its history."""

    index: int
    ops: socket.socket
    backoff: RestartBackoff = field(default_factory=RestartBackoff)
    proc: asyncio.subprocess.Process | None = None
    state: str = "starting"  # starting | running | restarting | stopping | stopped
    started_at: float = 0.0  # monotonic
    restarts: int = 0
    last_exit: str | None = None
    ever_ready: bool = False

    @property
    def ops_url(self) -> str:
        host, port = self.ops.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def view(self) -> dict[str, object]:
        """What the supervisor's status says about this worker."""
        return {
            "worker": self.index,
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "uptime_s": round(time.monotonic() - self.started_at, 1) if self.pid else None,
            "last_exit": self.last_exit,
            "ops_url": self.ops_url,
        }


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to the public port with ``SO_REUSEPORT``:
    the port is taken now (port 0 becomes a real one the workers share), a port
    another program listens on fails here, once; connections go only to the
    workers' listening sockets."""
    return bound_socket(
        host,
        port,
        "the eventpipe HTTP service",
        "pass --port N (or set EVENTPIPE_SERVICE_PORT)",
        reuse_port=True,
    )


def private_listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class Supervisor:
    """Runs ``count`` workers, each ``argv`` (an ``eventpipe run`` command line
    without its port: the supervisor adds ``--port``) with the worker's slot in
    its environment."""

    def __init__(
        self,
        settings: Settings,
        argv: Sequence[str],
        count: int,
        *,
        backoff: RestartBackoff | None = None,
    ) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.count = count
        self._backoff = backoff or RestartBackoff()
        self.workers: list[Worker] = []
        self.port: int | None = None
        self.ops_url: str | None = None  # where the supervisor serves (told to each worker)
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self._reserved: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------- lifecycle
    def reserve(self) -> int:
        """Take the public port (before anything else starts); the port."""
        svc = self.settings.service
        self._reserved = reserve_port(svc.host, svc.port)
        self.port = int(self._reserved.getsockname()[1])
        return self.port

    async def start(self) -> None:
        """Start every worker (after :meth:`reserve`)."""
        for i in range(self.count):
            backoff = RestartBackoff(
                self._backoff.initial_s, self._backoff.cap_s, self._backoff.stable_s
            )
            self.workers.append(Worker(i, private_listener(), backoff))
        self._tasks = [
            asyncio.create_task(self._keep(w), name=f"worker {w.index}") for w in self.workers
        ]

    async def wait_ready(self, timeout_s: float) -> bool:
        """True once every worker served its first request (False: stopping or timeout)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping.is_set():
            if all(w.ever_ready for w in self.workers):
                return True
            await asyncio.sleep(READY_POLL_S)
        return False

    def request_stop(self) -> None:
        if self.stopping.is_set():
            log.warning("a second signal: killing the workers now")
            self._signal_all(signal.SIGKILL)
            return
        log.info("stopping: SIGTERM to %d workers, each drains", len(self.workers))
        self.stopping.set()
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: signal.Signals) -> None:
        for w in self.workers:
            if w.pid is not None:
                w.state = "stopping"
                with contextlib.suppress(ProcessLookupError):
                    assert w.proc is not None
                    w.proc.send_signal(sig)

    async def run_until_stopped(self) -> int:
        """Wait until a signal (or a refused config) stops the workers; the exit status."""
        await self.stopping.wait()
        grace = self.settings.service.shutdown_timeout_s + STOP_MARGIN_S
        done, pending = await asyncio.wait(self._tasks, timeout=grace)
        if pending:
            late = [w for w in self.workers if w.pid is not None]
            log.error(
                "worker(s) %s still running %.0fs after SIGTERM: killed",
                ", ".join(str(w.index) for w in late),
                grace,
            )
            self._signal_all(signal.SIGKILL)
            await asyncio.wait(pending, timeout=10)
            self.exit_code = self.exit_code or 1
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("supervising a worker failed", exc_info=task.exception())
                self.exit_code = self.exit_code or 1
        return self.exit_code

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for w in self.workers:
            w.ops.close()
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None

    # --------------------------------------------------------------- a worker
    async def _keep(self, w: Worker) -> None:
        """Run worker ``w`` until the supervisor stops, restarting it when it exits."""
        while not self.stopping.is_set():
            await self._spawn(w)
            assert w.proc is not None
            ready = asyncio.create_task(self._watch_ready(w))
            code = await w.proc.wait()
            ready.cancel()
            uptime = time.monotonic() - w.started_at
            w.last_exit = describe_exit(code)
            if self.stopping.is_set():
                w.state = "stopped"
                log.info("worker %d (pid %d) stopped: %s", w.index, w.proc.pid, w.last_exit)
                if code != 0:  # it did not drain cleanly
                    self.exit_code = self.exit_code or 1
                return
            if code == CONFIG_REFUSED and not w.ever_ready:
                w.state = "stopped"
                log.error(
                    "worker %d refused its config (exit 2, its log says why); every worker "
                    "has the same config: stopping",
                    w.index,
                )
                self.exit_code = CONFIG_REFUSED
                self.request_stop()
                return
            wait = w.backoff.next_wait(uptime)
            w.restarts += 1
            w.state = "restarting"
            log.warning(
                "worker %d (pid %d) exited (%s) after %.1fs; restarting it in %.1fs (restart %d)",
                w.index,
                w.proc.pid,
                w.last_exit,
                uptime,
                wait,
                w.restarts,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), wait)
        w.state = "stopped"

    async def _spawn(self, w: Worker) -> None:
        slot = WorkerSlot(w.index, w.ops.fileno(), os.getpid(), self.ops_url)
        argv = [*self.argv, "--port", str(self.port)]
        w.proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **slot.env()},
            pass_fds=(w.ops.fileno(),),
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
        )
        w.started_at = time.monotonic()
        w.state = "starting"
        log.info("worker %d started (pid %d)", w.index, w.proc.pid)
        if self.stopping.is_set():  # the stop came while it was being started
            w.state = "stopping"
            w.proc.send_signal(signal.SIGTERM)

    async def _watch_ready(self, w: Worker) -> None:
        """Mark ``w`` running once it answers /healthz on its ops port."""
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    async with http.get(w.ops_url + "/healthz") as r:
                        if r.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(READY_POLL_S)
        if w.state == "starting":
            w.state = "running"
        w.ever_ready = True


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The command a worker runs: this interpreter, ``-m eventpipe``, ``argv``."""
    return [sys.executable, "-m", "eventpipe", *argv]
