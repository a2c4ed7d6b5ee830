"""A backfill over worker processes (``--workers N|auto``): every core runs lanes.

The process the user started is the coordinator.  It plans (or loads) the job,
holds the job's locks, sets the mode up (topics, scratch tables), then splits the
partitions (or tables) not done yet over N worker processes, largest remaining
first, each to the worker with the least work so far.  Each worker is
``python -m eventpipe.backfill.workers``, given the settings, the job id, its
partitions and its share of ``--rate`` on stdin; it loads the job from Postgres
and runs lanes over its partitions exactly as a single-process backfill does,
recording each partition's progress in the job's rows after every batch.  So the
job record is shared: ``--resume`` continues it with any number of workers, and
the coordinator's progress display is the sum of those rows, read every second.

A worker answers on stdout with one JSON line: records read, the samples it kept
(dry run, shadow), what it used (:mod:`.usage`) and its window, or the error that
stopped it.  When
one fails the others are stopped (SIGTERM, then SIGKILL) and the job fails with
that error; when the coordinator is interrupted it stops them the same way and
the job is ``interrupted``.  A worker whose coordinator died (``kill -9``) notices
within a second and stops; besides, it holds an advisory lock on each of its
partitions, which a resumed job's worker waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from eventpipe.errors import EventpipeError
from eventpipe.settings import Settings

from .job import Job, Progress, lock_key
from .options import BackfillError, BackfillRequest

if TYPE_CHECKING:
    from .modes import ModeRunner
    from .runner import Backfill

log = logging.getLogger(__name__)

POLL_S = 1.0
STOP_S = 30.0
LOCK_WAIT_S = 60.0
INTERRUPTED = 130
Part = tuple[str, int]


class WorkerFailedError(BackfillError):
    """A worker process stopped on an error; ``retriable`` as that error was."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


def split(parts: Sequence[Progress], n: int) -> list[list[Part]]:
    """``parts`` over ``n`` workers: largest remaining first, each to the least loaded."""
    loads = [0] * n
    out: list[list[Part]] = [[] for _ in range(n)]
    for p in sorted(parts, key=lambda p: -max(1, p.estimate - p.position)):
        i = loads.index(min(loads))
        out[i].append((p.stream, p.partition))
        loads[i] += max(1, p.estimate - p.position)
    return [w for w in out if w]


# ----------------------------------------------------------------- coordinator
@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process
    result: dict[str, Any] | None = None
    stderr_tail: bytes = b""


async def _pump_stderr(w: _Worker) -> None:
    """A worker's log lines to ours, the last few kept for an error message."""
    assert w.proc.stderr is not None
    async for line in w.proc.stderr:
        sys.stderr.write(line.decode("utf-8", "replace"))
        sys.stderr.flush()
        w.stderr_tail = (w.stderr_tail + line)[-4000:]


async def _wait(w: _Worker) -> None:
    assert w.proc.stdout is not None
    out = await w.proc.stdout.read()
    await w.proc.wait()
    for line in reversed(out.splitlines()):
        if line.startswith(b"{"):
            w.result = orjson.loads(line)
            break


async def _stop(workers: Sequence[_Worker]) -> None:
    running = [w for w in workers if w.proc.returncode is None]
    for w in running:
        with contextlib.suppress(ProcessLookupError):
            w.proc.terminate()
    try:
        await asyncio.wait_for(asyncio.gather(*(w.proc.wait() for w in running)), STOP_S)
    except TimeoutError:
        for w in running:
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
        await asyncio.gather(*(w.proc.wait() for w in running))


async def run_workers(bf: Backfill, job: Job, runner: ModeRunner, n: int) -> None:
    """Run ``job``'s partitions left over ``n`` worker processes; then the job's
    partitions, ``bf.run_read``, ``bf.worker_usage`` and the samples are the sums."""
    plan = split([p for p in job.partitions if not p.done], n)
    rate = job.options.get("rate")
    share = float(rate) / len(plan) if rate else None
    read_before = sum(p.counts.read for p in job.partitions)
    workers: list[_Worker] = []
    tasks: list[asyncio.Task[None]] = []
    poller = asyncio.create_task(_follow(bf, job))
    try:
        for i, parts in enumerate(plan):
            payload = pickle.dumps(
                {
                    "settings": bf.settings,
                    "catalog": bf.ctx.catalog,  # the coordinator's plugins, by reference
                    "job": job.id,
                    "parts": parts,
                    "rate": share,
                    "index": i,
                }
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "eventpipe.backfill.workers",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert proc.stdin is not None
            proc.stdin.write(payload)
            await proc.stdin.drain()
            proc.stdin.close()
            w = _Worker(i, proc)
            workers.append(w)
            tasks.append(asyncio.create_task(_pump_stderr(w)))
            tasks.append(asyncio.create_task(_wait(w)))
        waits = {asyncio.ensure_future(w.proc.wait()): w for w in workers}
        pending = set(waits)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = [waits[f] for f in done if waits[f].proc.returncode != 0]
            if any(w.proc.returncode == INTERRUPTED and w.result is None for w in failed):
                # Ctrl-C reaches the whole process group: the job is interrupted
                await _stop(workers)
                raise asyncio.CancelledError
            if failed:
                await _stop(workers)
                await asyncio.gather(*tasks, return_exceptions=True)
                raise _failure(failed[0])
        await asyncio.gather(*tasks)
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        if any(w.proc.returncode is None for w in workers):
            await asyncio.shield(_stop(workers))
        for t in tasks:
            t.cancel()
        loaded = await bf.store.load(job.id)
        if loaded is not None:  # what the workers recorded, also when they were stopped
            job.partitions = loaded.partitions
            bf.run_read = sum(p.counts.read for p in job.partitions) - read_before
    results = [w.result or {} for w in workers]
    bf.worker_usage = [r.get("usage") or {} for r in results]
    for r in results:
        window = r.get("window") or {}
        for k in ("records", "dedup_keys", "limit"):
            bf.window[k] = max(bf.window[k], int(window.get(k, 0)))
        runner.samples.merge(r.get("samples") or {})


def _failure(w: _Worker) -> WorkerFailedError:
    r = w.result or {}
    if "error" in r:
        return WorkerFailedError(
            f"backfill worker {w.index}: {r['error']}", retriable=bool(r.get("retriable"))
        )
    tail = w.stderr_tail.decode("utf-8", "replace").strip().splitlines()[-5:]
    return WorkerFailedError(
        f"backfill worker {w.index} exited with status {w.proc.returncode}"
        + (": " + " | ".join(tail) if tail else "")
    )


async def _follow(bf: Backfill, job: Job) -> None:
    """The progress display from the job's rows, which the workers update."""
    last_pos, last_read = await bf.store.positions(job.id)
    while True:
        await asyncio.sleep(POLL_S)
        pos, read = await bf.store.positions(job.id)
        bf.view.advance(max(0, pos - last_pos), max(0, read - last_read))
        last_pos, last_read = pos, read


# ---------------------------------------------------------------------- worker
@contextlib.asynccontextmanager
async def _hold_parts(url: str, job_id: str, parts: Sequence[Part]) -> AsyncIterator[None]:
    """Advisory locks on this worker's partitions (a worker left over from a killed
    run holds them until it notices and stops)."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT_S
        for stream, partition in sorted(parts):
            key = lock_key("part", f"{job_id}/{stream}/{partition}")
            while True:
                cur = await conn.execute("select pg_try_advisory_lock(%s)", (key,))
                row = await cur.fetchone()
                if row and row[0]:
                    break
                if loop.time() > deadline:
                    raise BackfillError(
                        f"{stream}[{partition}] of job {job_id} is held by another process"
                    )
                await asyncio.sleep(0.5)
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            await conn.close()


async def _watch_parent(parent: int, task: asyncio.Task[Any]) -> None:
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            log.warning("backfill worker: the coordinator is gone; stopping")
            task.cancel()
            return


async def work(payload: dict[str, Any]) -> dict[str, Any]:
    """One worker's share of a job (see the module docstring)."""
    from .modes import ModeRunner
    from .runner import Backfill, open_context
    from .usage import usage

    settings: Settings = payload["settings"]
    job_id: str = payload["job"]
    mine = {tuple(p) for p in payload["parts"]}
    ctx = await open_context(settings, payload["catalog"], migrate=False)
    try:
        bf = Backfill(ctx, BackfillRequest(pipeline=None, start=None, end=None, resume=job_id))
        job = await bf.prepare(plan=False)
        assert bf.built is not None
        runner = ModeRunner(bf.built, ctx, job, samples=int(job.options.get("samples", 5)))
        parts = [p for p in job.partitions if (p.stream, p.partition) in mine and not p.done]
        async with _hold_parts(bf.store.url, job.id, [(p.stream, p.partition) for p in parts]):
            try:
                await runner.start()
                await bf._work(job, runner, parts, payload.get("rate"))
            finally:
                await runner.close()
        return {
            "read": bf.run_read,
            "samples": runner.samples.as_dict(),
            "usage": usage(job.pipeline),
            "window": bf.window,
        }
    finally:
        await ctx.close()


def main() -> int:
    from eventpipe import loop
    from eventpipe.logs import setup_logging

    payload = pickle.loads(sys.stdin.buffer.read())
    setup_logging("WARNING")
    parent = os.getppid()

    async def go() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        watch = asyncio.create_task(_watch_parent(parent, task))
        try:
            return await work(payload)
        finally:
            watch.cancel()

    try:
        result = loop.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return INTERRUPTED
    except Exception as exc:  # reported to the coordinator, which fails the job
        if not isinstance(exc, EventpipeError):  # a bug: its traceback in the log
            log.exception("backfill worker %s failed", payload.get("index"))
        retriable = isinstance(exc, EventpipeError) and exc.retriable
        line = {"error": f"{type(exc).__name__}: {exc}", "retriable": retriable}
        sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
        sys.stdout.flush()
        return 1
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
