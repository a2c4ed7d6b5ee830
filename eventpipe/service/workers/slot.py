"""What the supervisor tells a worker, and the worker's side of it.

The supervisor starts each worker with these environment variables:
``EVENTPIPE_WORKER`` (its index, 0..N-1), ``EVENTPIPE_WORKER_OPS_FD`` (the file
descriptor of a listening socket on 127.0.0.1: the worker's private ops port,
where the supervisor reads its ``/metrics``, ``/readyz`` and ``/v1/status``),
``EVENTPIPE_WORKER_PARENT`` (the supervisor's pid) and
``EVENTPIPE_WORKER_SUPERVISOR_URL`` (the supervisor's ops URL, where the worker's
console reads every worker's status).  A worker listens on the
public port with ``SO_REUSEPORT``, tags its log lines with its index, and stops
(drains, as on SIGTERM) when its supervisor is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventpipe.service.runner import Service

log = logging.getLogger(__name__)
INDEX_ENV = "EVENTPIPE_WORKER"
OPS_FD_ENV = "EVENTPIPE_WORKER_OPS_FD"
PARENT_ENV = "EVENTPIPE_WORKER_PARENT"
SUPERVISOR_URL_ENV = "EVENTPIPE_WORKER_SUPERVISOR_URL"
PARENT_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    index: int
    ops_fd: int
    parent: int
    supervisor_url: str | None = None  # the supervisor's ops routes (merged /v1/status)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSlot | None:
        """The slot the supervisor gave this process; None when it runs on its own."""
        env = os.environ if environ is None else environ
        if INDEX_ENV not in env:
            return None
        return cls(
            int(env[INDEX_ENV]),
            int(env[OPS_FD_ENV]),
            int(env[PARENT_ENV]),
            env.get(SUPERVISOR_URL_ENV) or None,
        )

    def env(self) -> dict[str, str]:
        out = {
            INDEX_ENV: str(self.index),
            OPS_FD_ENV: str(self.ops_fd),
            PARENT_ENV: str(self.parent),
        }
        if self.supervisor_url:
            out[SUPERVISOR_URL_ENV] = self.supervisor_url
        return out

    def ops_socket(self) -> socket.socket:
        """The private ops listener the supervisor made (already listening)."""
        sock = socket.socket(fileno=self.ops_fd)
        sock.setblocking(False)
        return sock


async def stop_when_orphaned(slot: WorkerSlot, poll_s: float = PARENT_POLL_S) -> None:
    """SIGTERM to this process (the drain every stop takes) once the supervisor is
    gone (killed with -9, it cannot forward the signal itself)."""
    while True:
        if os.getppid() != slot.parent:
            break
        await asyncio.sleep(poll_s)
    log.warning("worker %d: the supervisor (pid %d) is gone; stopping", slot.index, slot.parent)
    with contextlib.suppress(ProcessLookupError):
        os.kill(os.getpid(), signal.SIGTERM)


async def serve_as_worker(
    service: Service,
    slot: WorkerSlot,
    on_ready: Callable[[Service], Awaitable[None] | None] | None = None,
) -> None:
    """:func:`~eventpipe.service.runner.serve_until_signalled`, stopping too when
    the supervisor is gone."""
    from eventpipe.service.runner import serve_until_signalled

    watch = asyncio.create_task(stop_when_orphaned(slot), name="supervisor watch")
    try:
        await serve_until_signalled(service, on_ready)
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
