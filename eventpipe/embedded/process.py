"""Child processes that die with us: no broker or database is left behind."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from eventpipe.errors import PermanentError

_PR_SET_PDEATHSIG = 1


class PortInUseError(PermanentError):
    def __init__(self, port: int, what: str, fix: str) -> None:
        self.port = port
        super().__init__(f"port {port} is already in use, so {what} cannot start there; {fix}")


class ChildFailedError(PermanentError):
    pass


def _deathsig(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        # Ask the kernel to signal the child when the process that started it dies,
        # even by kill -9.  Linux only; harmless elsewhere.
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, sig)
        os.setpgrp()  # Ctrl-C goes to us; we stop children in order.

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int, what: str, fix: str) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUseError(port, what, fix) from exc
            raise


def bound_socket(
    host: str, port: int, what: str, fix: str, *, reuse_port: bool = False
) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet); :class:`PortInUseError`
    naming ``what`` and the ``fix`` when the port is taken.  ``reuse_port``:
    ``SO_REUSEPORT``, so that processes of one user listen on the same port and
    the kernel spreads connections among them (``eventpipe run --workers``)."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortInUseError(port, what, fix) from exc
        raise
    return sock


def listen_socket(
    host: str, port: int, what: str, fix: str, *, reuse_port: bool = False
) -> socket.socket:
    """A listening TCP socket on ``host:port``, taken now: held from here on, the
    port cannot become an outgoing connection's ephemeral port, nor another
    server's.  Connections made before it is served wait in its backlog
    (``reuse_port``: :func:`bound_socket`)."""
    sock = bound_socket(host, port, what, fix, reuse_port=reuse_port)
    try:
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Child:
    """A started child process with a log file and an orderly stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        stop_signal: int = signal.SIGTERM,
        user: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.stop_signal = stop_signal
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the child
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_deathsig(stop_signal),
            user=user,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 15.0) -> None:
        """Idempotent: signal, wait, then SIGKILL."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()
