"""The relay loop (eventpipe.relay) on scripted sessions: backoff by error class,
reset on progress, jitter bounds, stop with and without grace, status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg.errors
import pytest
from aiokafka import errors as kafka_errors

from eventpipe import metrics
from eventpipe.errors import BrokerUnavailableError, PermanentError, error_class_name
from eventpipe.relay import Backoff, RelayLoop

EXACT = Backoff(initial_s=1.0, retriable_cap_s=4.0, permanent_cap_s=16.0, jitter=0.0)


class Script:
    """A session that raises the scripted errors in turn (``None``: make progress
    and raise the next one), then waits for the stop."""

    def __init__(self, *steps: BaseException | None) -> None:
        self.steps = list(steps)
        self.sessions = 0

    async def __call__(self, relay: RelayLoop) -> None:
        self.sessions += 1
        while self.steps:
            step = self.steps.pop(0)
            if step is None:
                relay.made_progress()
                continue
            raise step
        relay.running()
        await relay.stop_event.wait()


def loop_with_waits(
    session: Script, *, name: str = "test", level: int = logging.ERROR
) -> tuple[RelayLoop, list[float]]:
    """A loop whose backoff waits are recorded instead of slept."""
    relay = RelayLoop(name, session, backoff=EXACT, log=logging.getLogger("t"), level=level)
    waits: list[float] = []

    async def sleep(seconds: float, wake: asyncio.Event | None = None) -> None:
        waits.append(seconds)

    relay.sleep = sleep  # type: ignore[method-assign]
    return relay, waits


async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never: {what}")


def test_backoff_doubles_up_to_the_cap_of_the_error_class() -> None:
    assert EXACT.after(1.0, retriable=True) == 2.0
    assert EXACT.after(2.0, retriable=True) == 4.0
    assert EXACT.after(4.0, retriable=True) == 4.0  # retriable cap
    assert EXACT.after(4.0, retriable=False) == 8.0
    assert EXACT.after(16.0, retriable=False) == 16.0  # permanent cap


def test_jitter_stays_within_its_band_and_varies() -> None:
    b = Backoff(initial_s=2.0, jitter=0.5)
    waits = [b.wait(2.0) for _ in range(500)]
    assert all(1.0 <= w <= 3.0 for w in waits)
    assert len(set(waits)) > 1  # not a fixed delay: relays that failed together spread out


async def test_errors_back_off_by_class_and_are_reported() -> None:
    retriable = BrokerUnavailableError("broker gone")
    permanent = PermanentError("bad table")
    script = Script(retriable, retriable, retriable, permanent, permanent)
    relay, waits = loop_with_waits(script)
    before = metrics.ERRORS.labels(error_class="eventpipe.errors.PermanentError")._value.get()
    await relay.start()
    await until(lambda: relay.active, "running after the scripted failures")
    # 1, 2, 4 (retriable cap), then permanent errors double past it: 4 -> 8
    assert waits == [1.0, 2.0, 4.0, 4.0, 8.0]
    assert relay.failures == 5 and script.sessions == 6
    assert relay.last_error is not None
    assert relay.last_error.error_class == "eventpipe.errors.PermanentError"
    assert relay.last_error.retriable is False
    assert relay.error == "PermanentError: bad table"
    after = metrics.ERRORS.labels(error_class="eventpipe.errors.PermanentError")._value.get()
    assert after - before == 2
    relay.clear_error()
    assert relay.error is None
    await relay.stop()
    assert relay.state == "stopped"


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("bad table"),
        psycopg.errors.InsufficientPrivilege("permission denied for table outbox"),
        kafka_errors.MessageSizeTooLargeError(),
    ],
    ids=["permanent", "permission", "too-large"],
)
async def test_a_classified_permanent_error_backs_off_to_its_cap(error: Exception) -> None:
    reported: list[BaseException] = []
    relay, waits = loop_with_waits(Script(error, error, error, error, error, error))
    relay.on_failure = reported.append
    await relay.start()
    await until(lambda: relay.active, "running")
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0]
    assert relay.last_error is not None and relay.last_error.retriable is False
    assert reported == []
    await relay.stop()
    assert relay.state == "stopped"


class Surprise(Exception):
    """No class explains it: a bug."""


@pytest.mark.parametrize(
    "bug",
    [Surprise("?"), TypeError("'NoneType' object is not subscriptable"), KeyError("seq")],
    ids=["unknown", "TypeError", "KeyError"],
)
async def test_an_unclassified_error_stops_the_loop_and_is_reported(
    bug: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    released: list[str] = []
    reported: list[BaseException] = []
    script = Script(BrokerUnavailableError("down"), bug)

    async def session(relay: RelayLoop) -> None:
        async def release() -> None:
            released.append(f"session {script.sessions}")

        relay.defer(release)
        relay.running()
        await script(relay)

    relay = RelayLoop("buggy", session, backoff=EXACT, log=logging.getLogger("t"))
    relay.on_failure = reported.append
    waits: list[float] = []

    async def sleep(seconds: float, wake: asyncio.Event | None = None) -> None:
        waits.append(seconds)

    relay.sleep = sleep  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="t"):
        await relay.start()
        task = relay.task
        assert task is not None
        await asyncio.wait_for(task, 5)
    assert reported == [bug]
    assert waits == [1.0]  # the retriable error backed off; the bug did not
    assert script.sessions == 2 and released == ["session 1", "session 2"]
    assert relay.state == "failed" and relay.component_state() == "failed"
    assert not relay.active
    assert relay.last_error is not None and relay.last_error.retriable is False
    assert relay.readiness() == f"failed: {type(bug).__name__}: {bug}"
    [line] = [r.getMessage() for r in caplog.records if "stopped" in r.getMessage()]
    assert f"buggy: stopped: {error_class_name(bug)} is not a classified error" in line
    await relay.stop()
    assert relay.state == "failed"  # what status shows while the service shuts down


async def test_progress_resets_the_backoff() -> None:
    err = BrokerUnavailableError("down")
    relay, waits = loop_with_waits(Script(err, err, err, None, err, err))
    await relay.start()
    await until(lambda: relay.active, "running")
    assert waits == [1.0, 2.0, 4.0, 1.0, 2.0]
    await relay.stop()


async def test_stop_lets_the_session_finish_its_batch() -> None:
    finished: list[str] = []

    async def session(relay: RelayLoop) -> None:
        relay.running()
        while not relay.stopping:
            await relay.sleep(60)  # returns at once when stopping
        await asyncio.sleep(0)  # the batch in flight settles
        finished.append("settled")

    relay = RelayLoop("graceful", session)
    await relay.start()
    await until(lambda: relay.active, "running")
    await relay.stop(grace_s=30)
    assert finished == ["settled"]
    assert relay.state == "stopped" and relay.task is None
    await relay.stop()  # idempotent


async def test_stop_without_grace_cancels_the_session() -> None:
    seen: list[str] = []

    async def session(relay: RelayLoop) -> None:
        relay.running()
        try:
            await asyncio.Event().wait()  # not stop-aware: only a cancel ends it
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    relay = RelayLoop("abrupt", session)
    await relay.start()
    await until(lambda: relay.active, "running")
    await relay.stop(grace_s=0)
    assert seen == ["cancelled"] and relay.state == "stopped"


async def test_a_session_that_returns_ends_the_loop_and_start_runs_it_again() -> None:
    runs: list[int] = []

    async def session(relay: RelayLoop) -> None:
        runs.append(1)  # e.g. stopped while waiting as standby

    relay = RelayLoop("once", session)
    await relay.start()
    task = relay.task
    assert task is not None
    await task
    assert runs == [1] and relay.state == "stopped"
    await relay.stop()
    await relay.start()
    assert relay.task is not None
    await relay.task
    assert runs == [1, 1]


async def test_sleep_wakes_on_its_event() -> None:
    relay = RelayLoop("wake", Script())
    wake = asyncio.Event()
    sleeper = asyncio.create_task(relay.sleep(60, wake=wake))
    await asyncio.sleep(0)
    wake.set()
    await asyncio.wait_for(sleeper, 5)
    assert sleeper.done() and not relay.stopping


@pytest.mark.parametrize("level", [logging.ERROR, logging.WARNING])
async def test_a_failure_is_logged_at_the_loops_level(
    level: int, caplog: pytest.LogCaptureFixture
) -> None:
    relay, _ = loop_with_waits(Script(BrokerUnavailableError("down")), name="logged", level=level)
    with caplog.at_level(logging.DEBUG, logger="t"):
        await relay.start()
        await until(lambda: relay.active, "running")
        await relay.stop()
    [record] = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert record.levelno == level
    assert record.getMessage() == "logged: retriable error, retrying in 1.0s: down"


async def test_a_failed_session_holds_its_resources_through_the_backoff() -> None:
    events: list[str] = []
    attempts = 0

    async def session(relay: RelayLoop) -> None:
        nonlocal attempts
        attempts += 1

        async def release() -> None:
            events.append(f"released {attempts}")

        async def broken() -> None:
            raise OSError("close failed")

        relay.defer(release)
        relay.defer(broken)  # logged; the other release still runs
        relay.running()
        if attempts == 1:
            raise BrokerUnavailableError("down")
        await relay.stop_event.wait()

    relay = RelayLoop("holds", session, backoff=EXACT, log=logging.getLogger("t"))

    async def sleep(seconds: float, wake: asyncio.Event | None = None) -> None:
        # during the backoff: still holding the lock, and reported as waiting
        events.append(f"backoff active={relay.active} state={relay.state} {relay.readiness()}")

    relay.sleep = sleep  # type: ignore[method-assign]
    await relay.start()
    await until(lambda: attempts == 2 and relay.active, "second session running")
    await relay.stop()
    assert events == [
        "backoff active=True state=waiting ok",
        "released 1",
        "released 2",
    ]
    assert not relay.active and relay.state == "stopped"
    # no session cleared the error and none holds the lock now
    assert relay.readiness() == "failing: BrokerUnavailableError: down"
