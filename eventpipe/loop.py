"""Running a coroutine on the fastest event loop available (uvloop where installed),
with the cyclic garbage collector tuned for batch work."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

# CPython's default young generation (700 container allocations) is collected every
# couple of events on the batch paths (a 1,000-record batch allocates ~100k objects
# that live until the batch is acknowledged), and each collection walks them all.
# A larger young generation makes those collections rare; cycles are still found.
# Measured on bench/pipeline.py (a): +5% events/s, decode ~15 -> ~11 us/event.
GC_THRESHOLDS = (50_000, 20, 100)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    return uvloop.new_event_loop


def tune_gc() -> None:
    """Process-wide: called by :func:`run`, i.e. by every eventpipe entry point."""
    gc.set_threshold(*GC_THRESHOLDS)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """While batches run: what exists now (modules, the pipeline) is left out of the
    cyclic GC's collections, as the service and the live pipeline do once started
    (a backfill's lanes: ~4% of its CPU time).  Unfrozen on exit, unless someone had
    frozen objects already (then this leaves the heap as it is)."""
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has finished."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_all(jobs: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``jobs`` at once; their results in order.  The first failure cancels the
    others and is raised as it is (not in an ExceptionGroup), and the calling task
    is left as it was: Python 3.11's TaskGroup, when a job fails while the group
    waits for its jobs, cancels the caller and never takes that back, so the caller
    would go on with ``cancelling() == 1``."""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(j) for j in jobs]
    except BaseExceptionGroup as eg:
        if task is not None and task.cancelling() > before:
            task.uncancel()  # the group's own request (3.12 takes it back itself)
        raise eg.exceptions[0] from None
    return [t.result() for t in tasks]


def run(coro: Coroutine[Any, Any, T]) -> T:
    tune_gc()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
