"""eventpipe.loop.run_all: jobs at once, the first failure raised as it is, and the
calling task left as it was (Python 3.11's TaskGroup leaves it "cancelling" when a
job fails while the group waits; the HTTP sink's and the backfill's own copies of
that pattern did, checked with this test before they used run_all)."""

from __future__ import annotations

import asyncio

import pytest

from eventpipe.loop import run_all


async def _fail_soon() -> None:
    await asyncio.sleep(0.01)
    raise ValueError("bad")


async def _slow(done: list[str]) -> None:
    try:
        await asyncio.sleep(10)
    finally:
        done.append("slow stopped")


async def test_results_come_back_in_order() -> None:
    async def value(n: int) -> int:
        await asyncio.sleep(0.01 * (3 - n))
        return n

    assert await run_all(value(n) for n in range(3)) == [0, 1, 2]


async def test_a_failing_job_stops_the_others_and_leaves_the_caller_uncancelled() -> None:
    done: list[str] = []
    with pytest.raises(ValueError, match="bad"):
        await run_all([_fail_soon(), _slow(done)])
    assert done == ["slow stopped"]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # not cancelled at its next await either
    with pytest.raises(ValueError):  # and it can run jobs again
        await run_all([_fail_soon()])
    assert task.cancelling() == 0


async def test_a_cancel_from_outside_still_cancels() -> None:
    done: list[str] = []
    runner = asyncio.create_task(run_all([_slow(done), _slow(done)]))
    await asyncio.sleep(0.01)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert done == ["slow stopped", "slow stopped"]
