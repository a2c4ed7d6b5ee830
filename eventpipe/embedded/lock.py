"""One ``eventpipe dev`` per data directory.

The running one holds an exclusive ``flock`` on ``<data dir>/eventpipe.lock``,
with its PID written in the file.  The kernel drops the lock when the process
dies, even by kill -9, so a file left behind never blocks the next start; a
second ``eventpipe dev`` on the directory fails before it touches anything and
says which process holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from eventpipe.errors import PermanentError

log = logging.getLogger(__name__)
LOCK_FILE = "eventpipe.lock"


class DataDirInUseError(PermanentError):
    pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DataDirInUseError` naming the holder."""
        if self._fd is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUseError(
                f"data directory {self.data_dir} is in use by another `eventpipe dev` "
                f"(pid {holder}); stop that one first, or pass --data-dir DIR "
                "(and other ports) to run a second one beside it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Idempotent.  The file stays: removing it would race a starting process."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
