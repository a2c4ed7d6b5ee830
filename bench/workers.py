"""Pipelines as real worker processes: ``eventpipe run --role pipelines``, several of
them in one consumer group (how a pipeline scales out, ARCHITECTURE.md section 8).

The source topic is filled before the workers start.  Each worker serves its ops
endpoints on its own port; their ``/metrics`` are polled (every ``POLL_S``) for
``eventpipe_pipeline_events_in_total`` and ``..._events_out_total``.  The rate is
counted from the first poll at which every worker is consuming (the group has
rebalanced and each holds partitions) until the sinks together have written all
``n`` events: ``(n - out at start) / elapsed``.  A worker's peak RSS is its VmHWM.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.common import pid_peak_rss_mb, trace_env
from eventpipe.embedded.process import free_port

POLL_S = 0.1
_SAMPLE = re.compile(
    r'^eventpipe_pipeline_events_(in|out)_total\{[^}]*pipeline="([^"]+)"[^}]*\} ([0-9.e+]+)$',
    re.M,
)


@dataclass
class WorkersResult:
    rate: float  # events/s, all workers together
    counted: int  # events in the timed window
    rss_mb: list[float]  # peak RSS of each worker


def _config(path: Path, spec: dict[str, Any]) -> Path:
    cfg = {
        "service": {
            "host": "127.0.0.1",
            "log_level": "WARNING",
            "console": {"public_read": True},  # the supervisor's /v1/status
        },
        "kafka": {"linger_ms": 5},
        "database": {"pool_max": 4},
        "pipelines": [spec],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _result(n: int, out_start: float, elapsed: float, pids: list[int]) -> WorkersResult:
    """The rate over the events written once every worker was consuming."""
    counted = int(n - out_start)
    if counted < n // 4:
        raise RuntimeError(
            f"only {counted} of {n} events were left once every worker was consuming: "
            "raise BENCH_WORKER_EVENTS"
        )
    return WorkersResult(counted / elapsed, counted, [pid_peak_rss_mb(p) for p in pids])


async def _counts(
    session: aiohttp.ClientSession, port: int, pipeline: str
) -> tuple[float, float] | None:
    """(events in, events out) of one worker, or None while it is not serving."""
    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
    except (aiohttp.ClientError, OSError):
        return None
    got = {"in": 0.0, "out": 0.0}
    for kind, name, value in _SAMPLE.findall(text):
        if name == pipeline:
            got[kind] += float(value)
    return got["in"], got["out"]


# (all workers consuming, events out so far, the pids to report) or None (no answer)
Sample = tuple[bool, float, list[int]] | None


async def _until_delivered(
    n: int, alive: Callable[[], None], sample: Callable[[], Awaitable[Sample]]
) -> WorkersResult:
    """Poll until ``n`` events are out, timed from the first sample in which every
    worker was consuming; ``alive`` raises when a process exited."""
    t_start: float | None = None
    out_start = 0.0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        alive()
        now = time.perf_counter()
        got = await sample()
        if got is not None:
            consuming, out, pids = got
            if t_start is None and consuming:
                t_start, out_start = now, out
            if t_start is not None and out >= n:
                return _result(n, out_start, now - t_start, pids)
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"the workers did not deliver {n} events in time")


async def run_workers(
    bootstrap: str, db_url: str, spec: dict[str, Any], n: int, workers: int
) -> WorkersResult:
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    cfg = _config(work / "pipeline.yaml", spec)
    ports = [free_port() for _ in range(workers)]
    procs = await asyncio.to_thread(_start, cfg, ports, bootstrap, db_url)
    name = spec["name"]

    def alive() -> None:
        for i, p in enumerate(procs):
            if p.poll() is not None:
                tail = (work / f"worker{i}.log").read_text()[-2000:]
                raise RuntimeError(f"worker {i} exited with {p.returncode}:\n{tail}")

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:

            async def sample() -> Sample:
                counts = await asyncio.gather(*(_counts(session, p, name) for p in ports))
                if any(c is None for c in counts):
                    return None
                known = [c for c in counts if c is not None]
                consuming = all(c[0] > 0 for c in known)
                return consuming, sum(c[1] for c in known), [p.pid for p in procs]

            return await _until_delivered(n, alive, sample)
    finally:
        await asyncio.to_thread(_stop, procs)


async def _consuming(
    session: aiohttp.ClientSession, ops: str, pipeline: str
) -> tuple[dict[int, int], list[int]]:
    """(worker -> events its pipeline took in, the workers' pids), from the
    supervisor's /v1/status."""
    try:
        async with session.get(f"{ops}/v1/status") as r:
            snap = await r.json()
    except (aiohttp.ClientError, OSError, ValueError):
        return {}, []
    taken = {
        c["worker"]: c["total_in"]
        for c in snap.get("components", [])
        if c["check"] == f"pipeline:{pipeline}"
    }
    return taken, [w["pid"] for w in snap.get("workers", []) if w["pid"]]


async def run_supervised(
    bootstrap: str, db_url: str, spec: dict[str, Any], n: int, workers: int
) -> WorkersResult:
    """As :func:`run_workers`, with ``eventpipe run --workers N``: one command, the
    supervisor's merged /metrics and /v1/status read instead of each worker's.
    ``rss_mb``: the supervisor's peak RSS, then each worker's."""
    work = Path(tempfile.mkdtemp(prefix="bench-supervised-"))
    cfg = _config(work / "pipeline.yaml", spec)
    ops = free_port()
    [proc] = await asyncio.to_thread(
        _start,
        cfg,
        [0],
        bootstrap,
        db_url,
        ["--workers", str(workers)],
        {"EVENTPIPE_SERVICE_OPS_PORT": str(ops)},
    )
    name, url = spec["name"], f"http://127.0.0.1:{ops}"

    def alive() -> None:
        if proc.poll() is not None:
            tail = (work / "worker0.log").read_text()[-2000:]
            raise RuntimeError(f"the supervisor exited with {proc.returncode}:\n{tail}")

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:

            async def sample() -> Sample:
                counts = await _counts(session, ops, name)
                taken, pids = await _consuming(session, url, name)
                if counts is None:
                    return None
                consuming = len(taken) == workers and all(taken.values())
                return consuming, counts[1], [proc.pid, *pids]

            return await _until_delivered(n, alive, sample)
    finally:
        await asyncio.to_thread(_stop, [proc])


Procs = list[subprocess.Popen[bytes]]
COMMAND = [sys.executable, "-m", "eventpipe", "run", "--role", "pipelines", "-c"]


def _start(
    cfg: Path,
    ports: list[int],
    bootstrap: str,
    db_url: str,
    argv: list[str] | None = None,
    env_more: dict[str, str] | None = None,
) -> Procs:
    procs = []
    for i, port in enumerate(ports):
        env = dict(
            os.environ,
            EVENTPIPE_KAFKA_BOOTSTRAP=bootstrap,
            EVENTPIPE_DATABASE_URL=db_url,
            EVENTPIPE_SERVICE_PORT=str(port),
            **trace_env(),
            **(env_more or {}),
        )
        with (cfg.parent / f"worker{i}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [*COMMAND, str(cfg), *(argv or [])],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return procs


def _stop(procs: Procs) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ------------------------------------------------------- the raw peer, scaled out
# The raw passthrough as several processes in one consumer group: the peer of the
# eventpipe workers, so the scaled-out comparison is processes against processes.
RAW_IDLE_S = 2.0  # a raw worker stops this long after its last record


async def pass_batch(consumer: Any, producer: Any, dst: str) -> tuple[int, float]:
    """One step of the raw passthrough: a fetch, each record produced to ``dst`` as it
    came, all acknowledged, the offsets committed.  Returns the records passed and
    when the fetch returned."""
    batch = await consumer.getmany(timeout_ms=200, max_records=1000)
    fetched = time.perf_counter()
    futs = []
    for recs in batch.values():
        for r in recs:
            futs.append(await producer.send(dst, r.value, key=r.key, headers=list(r.headers)))
    if futs:
        await asyncio.gather(*futs)
        await consumer.commit()
    return len(futs), fetched


async def raw_worker(bootstrap: str, src: str, dst: str, group: str) -> list[tuple[float, int]]:
    """Consume ``src`` in ``group``, produce each record to ``dst``, commit per batch;
    returns (acknowledged at, records) per batch, on the shared monotonic clock."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    c = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await c.start()
    await p.start()
    acked: list[tuple[float, int]] = []
    last = time.perf_counter() + 60  # generous until the first record
    try:
        while time.perf_counter() - last < RAW_IDLE_S:
            passed, _ = await pass_batch(c, p, dst)
            if passed:
                last = time.perf_counter()
                acked.append((last, passed))
    finally:
        await c.stop()
        await p.stop()
    return acked


def raw_worker_main(argv: list[str]) -> None:
    from eventpipe import loop

    bootstrap, src, dst, group = argv
    acked = loop.run(raw_worker(bootstrap, src, dst, group))
    sys.stdout.write(yaml.safe_dump([list(a) for a in acked]))


async def run_raw_workers(bootstrap: str, src: str, dst: str, n: int, workers: int) -> float:
    """events/s of ``workers`` raw passthrough processes together, counted as the
    eventpipe workers are: from the moment every process has acknowledged a batch
    to the last acknowledgement."""
    group = f"raw-w{workers}-{dst}"
    cmd = [sys.executable, "-m", "bench.workers", "--raw", bootstrap, src, dst, group]

    def run() -> list[str]:
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        outs = [p.communicate(timeout=600)[0].decode() for p in procs]
        for p in procs:
            if p.returncode:
                raise RuntimeError(f"a raw worker exited with {p.returncode}")
        return outs

    per_worker = [
        [(float(t), int(k)) for t, k in yaml.safe_load(out) or []]
        for out in await asyncio.to_thread(run)
    ]
    if any(not acked for acked in per_worker):
        raise RuntimeError("a raw worker got no partitions: raise BENCH_WORKER_EVENTS")
    start = max(acked[0][0] for acked in per_worker)
    end = max(acked[-1][0] for acked in per_worker)
    counted = sum(k for acked in per_worker for t, k in acked if t > start)
    total = sum(k for acked in per_worker for _, k in acked)
    if total < n:
        raise RuntimeError(f"the raw workers passed {total} of {n} events")
    if counted < n // 4:
        raise RuntimeError(f"only {counted} of {n} events were left once every raw worker ran")
    return counted / (end - start)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--raw"]:
        raw_worker_main(sys.argv[2:])
