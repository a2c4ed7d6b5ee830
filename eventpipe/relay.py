"""One loop for every relay: the outbox relay, the CDC source's reader, the webhook
spool.

Each of them moves rows to the broker the same way: take an advisory lock (one
active relay; other processes wait as standby), poll or claim rows, publish,
wait for the broker's acknowledgement, and only then mark, delete or advance.
What differs (the lock, the order, how rows are marked) is the component's
*session*: an async function that does that work until the component stops, and
returns then, or raises.  :class:`RelayLoop` runs the session again after a
failure, for as long as the component runs:

- a failed session keeps what it holds (its connection, and with it the advisory
  lock) through the wait: resources it hands to :meth:`RelayLoop.defer` are
  released when the session is over, after the wait when it failed, so a pause
  does not hand the work to a standby, and a monitor the session runs keeps
  watching (the CDC stall alarm);
- the wait before the next session grows exponentially from
  :attr:`Backoff.initial_s` to a cap, with jitter so that relays which failed
  together do not retry together; a session that made progress
  (:meth:`RelayLoop.made_progress`) starts the next wait from the beginning;
- errors are classified by class (:func:`eventpipe.errors.classify`, with
  ``record=False``: a session dead-letters the rows it cannot encode itself, so a
  ``ValueError`` or ``TypeError`` that leaves it is no row's bad data): a
  retriable one backs off up to :attr:`Backoff.retriable_cap_s`, a permanent one
  (a permission the database refuses, a setup problem) up to
  :attr:`Backoff.permanent_cap_s` (a relay has no record to dead-letter: the
  rows stay where they are and an operator sees the error in the log, the
  metrics and the status);
- an error that no class explains is a bug: the loop stops (state ``failed``)
  instead of retrying it forever, releases what the session held (its
  transaction rolls back, nothing it did not publish is marked, deleted or
  advanced) and calls ``on_failure`` (the component's
  :meth:`~eventpipe.plugin.Component.report_failure`: the service shuts down and
  ``eventpipe run`` exits 3, as for a pipeline's bug);
- :attr:`RelayLoop.state` and :attr:`RelayLoop.last_error` are what status and
  readiness report.

:meth:`RelayLoop.stop` lets the session finish the batch in flight (it is
acknowledged and marked, or re-sent by the next relay with the same ids), within
a grace period; past it, the session is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from eventpipe import metrics
from eventpipe.errors import classify, error_class_name
from eventpipe.status import RECENT_ERRORS, ErrorInfo, State

RelayState = Literal["stopped", "starting", "waiting", "running", "failed"]
Session = Callable[["RelayLoop"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between failed sessions: ``initial_s``, doubled after each failure up
    to the cap of the error's kind; each wait is drawn uniformly from
    ``[1 - jitter, 1 + jitter]`` times its step."""

    initial_s: float = 0.5
    retriable_cap_s: float = 10.0
    permanent_cap_s: float = 60.0
    jitter: float = 0.5

    def after(self, step: float, retriable: bool) -> float:
        """The step after a failure at ``step``."""
        return min(step * 2, self.retriable_cap_s if retriable else self.permanent_cap_s)

    def wait(self, step: float) -> float:
        return step * random.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(frozen=True, slots=True)
class LastError:
    """The error that ended the last failed session."""

    message: str  # "ClassName: text", as readiness shows it
    error_class: str  # fully qualified
    retriable: bool
    at: datetime


class RelayLoop:
    """Runs ``session`` until :meth:`stop`, with backoff between failures, or until
    an error no class explains (then ``on_failure(error)``)."""

    def __init__(
        self,
        name: str,
        session: Session,
        *,
        backoff: Backoff | None = None,
        log: logging.Logger | None = None,
        level: int = logging.ERROR,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.name = name
        self.session = session
        self.backoff = backoff or Backoff()
        self.log = log or logging.getLogger(__name__)
        self.level = level  # of the line logged for a failed session
        self.on_failure = on_failure  # the loop stopped on a bug
        self.state: RelayState = "stopped"
        self.active = False  # a session holds its lock and is not over yet
        self.last_error: LastError | None = None
        self.recent: deque[ErrorInfo] = deque(maxlen=RECENT_ERRORS)  # for status, oldest first
        self.failures = 0  # sessions that ended in an error, ever
        self._step = self.backoff.initial_s
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._exits: contextlib.AsyncExitStack | None = None

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is not None:
            return
        self._stop.clear()
        self.state = "starting"
        self._task = asyncio.create_task(self._run(), name=f"relay:{self.name}")

    async def stop(self, grace_s: float = 30.0) -> None:
        """Ask the session to stop and wait up to ``grace_s`` for it; then cancel it.
        Idempotent."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        if grace_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), grace_s)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self.state != "failed":
            self.state = "stopped"

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    # ----------------------------------------------------- for the session
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def stop_event(self) -> asyncio.Event:
        return self._stop

    @property
    def error(self) -> str | None:
        return self.last_error.message if self.last_error is not None else None

    def readiness(self) -> str:
        """ "ok", or why not: the loop stopped on a bug, or the last session failed
        and no session holds the lock."""
        if self.state == "failed" and self.last_error is not None:
            return f"failed: {self.last_error.message}"
        if self.last_error is not None and not self.active:
            return f"failing: {self.last_error.message}"
        return "ok"

    def component_state(self) -> State:
        """The state a component running this loop reports: ``stalled`` while it waits
        to retry after a failed session, ``waiting`` as standby, ``failed`` once it
        stopped on a bug."""
        if self.state == "waiting" and self.last_error is not None and not self.active:
            return "stalled"
        return self.state

    def error_info(self) -> ErrorInfo | None:
        e = self.last_error
        return None if e is None else ErrorInfo(e.message, e.error_class, e.at)

    def recent_errors(self) -> list[ErrorInfo]:
        """The errors of the last failed sessions (a cleared one included), oldest first."""
        return list(self.recent)

    def standby(self) -> None:
        """Another process holds the lock: this one waits."""
        self.state = "waiting"
        self.active = False

    def running(self) -> None:
        """The session holds its lock and works (until it is over)."""
        self.state = "running"
        self.active = True

    def defer(self, callback: Callable[[], Awaitable[object]]) -> None:
        """Run ``callback`` when the current session is over: as it returns, or after
        the wait that follows its failure.  Last deferred, first run; an error in one
        is logged and the others still run."""
        stack = self._exits
        assert stack is not None, "defer() is for the running session"

        async def guarded() -> None:
            try:
                await callback()
            except Exception:
                self.log.exception("%s: releasing a session's resources failed", self.name)

        stack.push_async_callback(guarded)

    def clear_error(self) -> None:
        """The session is set up again after a failure: readiness is ok."""
        self.last_error = None

    def made_progress(self) -> None:
        """Rows moved: the next failure backs off from the beginning."""
        self._step = self.backoff.initial_s

    async def sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Wait ``seconds``, less when stopping (or when ``wake`` is set)."""
        waits = [asyncio.ensure_future(self._stop.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # ------------------------------------------------------------- the loop
    async def _run(self) -> None:
        bug: Exception | None = None
        try:
            while not self._stop.is_set():
                self.state = "starting"
                async with contextlib.AsyncExitStack() as self._exits:
                    try:
                        await self.session(self)
                        return  # a session returns when the component stops
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        verdict = classify(exc, record=False)
                        self._note(exc, verdict is True)
                        if verdict is None:
                            bug = exc
                            break  # what the session holds is released first
                        await self._back_off(exc, verdict)  # holding what it holds
                self.active = False
        finally:
            self._exits = None
            self.active = False
            self.state = "failed" if bug is not None else "stopped"
        if bug is not None:
            self._stopped_on(bug)

    def _note(self, exc: Exception, retriable: bool) -> None:
        cls = error_class_name(exc)
        self.failures += 1
        self.last_error = LastError(
            f"{type(exc).__name__}: {exc}", cls, retriable, datetime.now(UTC)
        )
        self.recent.append(ErrorInfo(self.last_error.message, cls, self.last_error.at))
        metrics.ERRORS.labels(error_class=cls).inc()

    def _stopped_on(self, exc: Exception) -> None:
        self.log.error(
            "%s: stopped: %s is not a classified error (a bug), so it is not retried; "
            "nothing the session did not publish was acknowledged: %s",
            self.name,
            error_class_name(exc),
            exc,
            exc_info=exc if self.on_failure is None else None,
        )
        if self.on_failure is not None:
            self.on_failure(exc)  # the component's report_failure logs the traceback

    async def _back_off(self, exc: Exception, retriable: bool) -> None:
        wait = self.backoff.wait(self._step)
        self.log.log(
            self.level,
            "%s: %s error, retrying in %.1fs: %s",
            self.name,
            "retriable" if retriable else "permanent",
            wait,
            exc,
        )
        self.state = "waiting"
        await self.sleep(wait)
        self._step = self.backoff.after(self._step, retriable)
