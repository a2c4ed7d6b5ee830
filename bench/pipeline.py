"""Pipelines: throughput beside peers measured in the same run.

(a) topic -> 3-step jq chain -> topic: the eventpipe pipeline (faust app, batches,
    dedup table on) beside a raw aiokafka consume-produce passthrough loop and a
    plain per-message faust agent doing the same 3 steps with an awaited send.
    The same pipeline also runs as real processes, ``eventpipe run --role
    pipelines --workers N`` for N in 1..cores on a 4-partition topic (the workers
    in one consumer group, under one supervisor), beside N raw consume-produce
    processes (bench/workers.py); ``BENCH_WORKERS_ONLY=1`` runs only that.
(b) topic -> Postgres with exactly-once effect (rows + offset marks in one
    transaction) beside a raw loop that consumes and COPYs the same rows with no
    guarantees.
(c) ``BENCH_OTEL=both`` (or ``only``): the in-process pipeline of (a) with
    tracing off and on (bench/otel.py), on events that each carry a trace context.
(d) the cost of the event trace index (``BENCH_TRACE=both``, the default): the
    pipeline of (a) with jaq steps, in this process, with the index off (the peer)
    and on, interleaved rounds; the index is on in (a) and (b) as in the service,
    unless ``BENCH_TRACE=off``.

Targets (issue 6): (a) >= 0.5x raw passthrough, >= 10x the per-message agent,
>= 12,000 events/s; (b) >= 0.7x the raw COPY loop, >= 10,000 events/s; (issue 17)
(d) >= 0.95x with the index on.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

import faust
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import otel
from bench.common import (
    TRACE_MODE,
    TRACE_ROUNDS,
    Sample,
    console,
    cpu_note,
    run_on_stack,
    self_peak_rss_mb,
    table,
    trace_cost_table,
    trace_enabled,
)
from bench.publish import PAYLOAD
from bench.workers import (
    WorkersResult,
    pass_batch,
    run_raw_workers,
    run_supervised,
    run_workers,
)
from eventpipe.context import Context
from eventpipe.db.pool import open_pool
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import from_kafka, to_kafka
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.pipelines.runtime import PipelineRuntime
from eventpipe.pipelines.spec import PipelineSpec
from eventpipe.publisher import Publisher
from eventpipe.service.catalog import CATALOG
from eventpipe.settings import Settings, TopicSpec
from eventpipe.trace.writer import TraceWriter
from eventpipe.transforms import Chain

# At 20,000 events the raw loop is still warming up (half its 60,000-event rate).
N = int(os.environ.get("BENCH_EVENTS", "50000"))
N_WORKERS = int(os.environ.get("BENCH_WORKER_EVENTS", "100000"))
WORKERS_ONLY = os.environ.get("BENCH_WORKERS_ONLY", "") not in ("", "0")
N_PER_MESSAGE = int(os.environ.get("BENCH_PER_MESSAGE_EVENTS", "3000"))
# The raw peers swing a lot between runs (raw COPY 38-69k/s on one machine): each
# is measured PEER_ROUNDS times and its best is the reference.
PEER_ROUNDS = int(os.environ.get("BENCH_PEER_ROUNDS", "2"))
# (b) rounds are short (about a second each) and the first one of a run is often
# the slow one for both paths (fresh WAL segments, cold caches): three
# interleaved rounds, the best of each path compared.
COPY_ROUNDS = int(os.environ.get("BENCH_COPY_ROUNDS", "3"))
STEPS: list[Any] = [
    {
        "jq": "{order_id, customer: .customer.id, tier: .customer.tier, total, "
        "items: [.items[] | {sku, qty}]}",
        "engine": "jq",
    },
    {"filter": ".data.total > 10"},
    {"jq": ". + {big: (.total > 100)}"},
]
STEPS = [
    {"jq": {"program": STEPS[0]["jq"], "engine": "jq"}},
    {"filter": {"expression": STEPS[1]["filter"], "engine": "jq"}},
    {"jq": {"program": STEPS[2]["jq"], "engine": "jq"}},
]
# The same steps on jaq, the default engine (libjq costs ~117 us an event for this
# chain, jaq ~55: bench/transforms.py).
STEPS_JAQ: list[Any] = [{next(iter(s)): {**next(iter(s.values())), "engine": "jaq"}} for s in STEPS]


async def make_topic(settings: Settings, name: str, partitions: int = 3) -> str:
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=name, partitions=partitions)])
    return name


async def fill(settings: Settings, topic: str, n: int, *, traced: bool = False) -> int:
    """``traced``: each event carries its own caller's trace context (traceparent)."""
    events = [
        CloudEvent.create(
            "shop.order.created", "/bench", PAYLOAD, id=f"{topic}-{i}", partitionkey=f"c{i % 64}"
        )
        for i in range(n)
    ]
    if traced:
        for i, event in enumerate(events):
            event.extensions["traceparent"] = otel.traceparent(i)
    async with Publisher(settings) as pub:
        for i in range(0, n, 5000):
            await pub.publish_batch(topic, events[i : i + 5000])
    return len(to_kafka(events[0]).value or b"")


# ------------------------------------------------------------------- peers (a)
async def raw_passthrough(bootstrap: str, src: str, dst: str, n: int, group: str = "") -> float:
    c = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=group or f"raw-{src}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await c.start()
    await p.start()
    try:
        done, t0 = 0, None
        while done < n:
            passed, fetched = await pass_batch(c, p, dst)
            if t0 is None and passed:
                t0 = fetched
            done += passed
        assert t0 is not None
        return n / (time.perf_counter() - t0)
    finally:
        await c.stop()
        await p.stop()


async def faust_per_message(bootstrap: str, src: str, dst: str, n: int) -> float:
    chain = Chain(STEPS)
    app = faust.App(
        f"pm-{src}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        datadir=tempfile.mkdtemp(),
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        broker_rebalance_timeout=5.0,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
    )
    source = app.topic(src, key_serializer="raw", value_serializer="raw")
    out = app.topic(dst, key_serializer="raw", value_serializer="raw")
    done = asyncio.Event()
    state: dict[str, Any] = {"n": 0, "t0": None}

    @app.agent(source)
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            if state["t0"] is None:
                state["t0"] = time.perf_counter()
            m = event.message
            for e in chain.process(from_kafka(m.key, m.value, m.headers)):
                k = to_kafka(e)
                fut = await out.send(key=k.key, value=k.value, headers=k.headers)
                await fut
            state["n"] += 1
            if state["n"] >= n:
                done.set()

    await app.start()
    try:
        await asyncio.wait_for(done.wait(), 600)
        return n / (time.perf_counter() - state["t0"])
    finally:
        await app.stop()


# ------------------------------------------------------------------ eventpipe
async def run_pipeline(settings: Settings, spec: dict[str, Any], n: int) -> float:
    return (await pipeline_sample(settings, spec, n)).rate


async def pipeline_sample(
    settings: Settings, spec: dict[str, Any], n: int, *, trace: bool | None = None
) -> Sample:
    """Events/s of the pipeline in this process, and this process's CPU time per
    event; ``trace``: with the trace index writer the service would give it
    (default: BENCH_TRACE)."""
    pool = await open_pool(settings.database)
    pub = Publisher(settings)
    admin = TopicAdmin(settings.kafka)
    writer = TraceWriter(pool, settings.trace)
    if trace_enabled() if trace is None else trace:
        pub.trace = writer
        await writer.start()
    await pub.start()
    await admin.start()
    resources = Context(settings, pub, admin, pool, CATALOG)
    rt = PipelineRuntime(PipelineSpec.model_validate(spec), resources)
    marks: dict[str, Any] = {"t0": None, "n": 0}
    done = asyncio.Event()
    try:
        await rt.start()
        assert rt.processor is not None
        inner = rt.processor.process

        async def timed(records: list[Any]) -> None:
            if marks["t0"] is None:
                marks["t0"] = time.perf_counter()
                marks["c0"] = time.process_time()
            await inner(records)
            marks["n"] += len(records)
            if marks["n"] >= n and not done.is_set():
                marks["t1"] = time.perf_counter()
                marks["c1"] = time.process_time()
                done.set()

        setattr(rt.processor, "process", timed)  # noqa: B010 - timing wrapper
        await asyncio.wait_for(done.wait(), 600)
        return Sample(
            n / (marks["t1"] - marks["t0"]), (marks["c1"] - marks["c0"]) / marks["n"] * 1e6
        )
    finally:
        await rt.stop()
        await pub.stop()
        await writer.stop()
        await admin.stop()
        await pool.close()


WORKER_COUNTS = list(range(1, (os.cpu_count() or 1) + 1))  # 1..cores


async def scaled_out(
    settings: Settings, bootstrap: str, db_url: str, stamp: int
) -> list[tuple[int, WorkersResult]]:
    """The pipeline (jaq steps) as ``eventpipe run --role pipelines --workers N``
    for N in 1..cores (N = 1: one process, no supervisor, as ``--workers 1`` runs),
    beside N raw consume-produce processes in one consumer group, on one
    4-partition topic, counted the same way: processes against processes."""
    w_src = await make_topic(settings, f"bench-w-src-{stamp}", partitions=4)
    await fill(settings, w_src, N_WORKERS)
    scaled: list[tuple[int, WorkersResult]] = []
    worker_rounds: dict[int, list[WorkersResult]] = {}
    for workers in WORKER_COUNTS:
        for r in range(PEER_ROUNDS):
            spec = {
                "name": f"bench-w{workers}r{r}-{stamp}",
                "source": {"topics": [w_src], "session_timeout": "6s"},
                "steps": STEPS_JAQ,
                "sinks": [{"topic": {"topic": f"bp-w{workers}r{r}-{stamp}", "partitions": 4}}],
            }
            run = run_workers if workers == 1 else run_supervised
            result = await run(bootstrap, db_url, spec, N_WORKERS, workers)
            worker_rounds.setdefault(workers, []).append(result)
        scaled.append((workers, max(worker_rounds[workers], key=lambda w: w.rate)))
    raw_scaled: dict[int, list[float]] = {}
    for workers in WORKER_COUNTS:
        for r in range(PEER_ROUNDS):
            dst = await make_topic(settings, f"bp-rw{workers}r{r}-{stamp}", partitions=4)
            raw_scaled.setdefault(workers, []).append(
                await run_raw_workers(bootstrap, w_src, dst, N_WORKERS, workers)
            )
    one = scaled[0][1].rate
    table(
        "(a) scaled out: eventpipe run --workers N against N raw consume-produce processes, "
        "the same 4-partition topic, counted the same way (events/s)",
        ["N", "raw passthrough (peer)", "eventpipe run --workers N", "ratio", "vs N=1", "peak RSS"],
        [
            [
                str(w),
                f"{max(raw_scaled[w]):,.0f}",
                f"{r.rate:,.0f}",
                f"{r.rate / max(raw_scaled[w]):.2f}x",
                f"{r.rate / one:.2f}x",
                (
                    "worker " + ", ".join(f"{m:.0f}" for m in r.rss_mb)
                    if w == 1
                    else f"supervisor {r.rss_mb[0]:.0f}, workers "
                    + ", ".join(f"{m:.0f}" for m in r.rss_mb[1:])
                )
                + " MiB",
            ]
            for w, r in scaled
        ],
    )
    console.print(
        f"{N_WORKERS:,} events on 4 partitions, timed once every worker was consuming "
        f"({', '.join(f'{r.counted:,}' for _, r in scaled)} events counted); best of "
        f"{PEER_ROUNDS} rounds (eventpipe "
        + "; ".join(
            f"{w}: " + ", ".join(f"{r.rate:,.0f}" for r in rounds)
            for w, rounds in worker_rounds.items()
        )
        + "; raw "
        + "; ".join(
            f"{w}: " + ", ".join(f"{v:,.0f}" for v in rounds) for w, rounds in raw_scaled.items()
        )
        + f" events/s); {cpu_note()}"
    )
    return scaled


# ------------------------------------------------------------------- peers (b)
async def raw_copy(bootstrap: str, url: str, src: str, tbl: str, n: int) -> float:
    c = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=f"rawcopy-{tbl}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await c.start()
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            done, t0 = 0, None
            while done < n:
                batch = await c.getmany(timeout_ms=500, max_records=1000)
                if t0 is None and batch:
                    t0 = time.perf_counter()
                rows = []
                for recs in batch.values():
                    for r in recs:
                        e = from_kafka(r.key, r.value, r.headers)
                        rows.append((e.id, e.data["order_id"], e.data["total"]))
                async with (
                    conn.cursor() as cur,
                    cur.copy(f"copy {tbl} (event_id, order_id, total) from stdin") as copy,
                ):
                    for row in rows:
                        await copy.write_row(row)
                done += len(rows)
            assert t0 is not None
            return n / (time.perf_counter() - t0)
    finally:
        await c.stop()


async def tracing_on_and_off(settings: Settings, stamp: int) -> None:
    """(c) The in-process pipeline (jaq steps, topic sink) with tracing off and on
    (BENCH_OTEL), interleaved rounds on one topic whose events each carry a trace
    context: on, a batch span links to up to 128 of them."""
    src = await make_topic(settings, f"bench-otel-src-{stamp}")
    await fill(settings, src, N, traced=True)
    off: list[float] = []
    on: list[float] = []

    def spec(tag: str) -> dict[str, Any]:
        return {
            "name": f"bench-otel-{tag}-{stamp}",
            "source": {"topics": [src]},
            "steps": STEPS_JAQ,
            "sinks": [{"topic": {"topic": f"bp-otel-{tag}-{stamp}"}}],
        }

    async with otel.collector() as url:
        for r in range(PEER_ROUNDS):
            off.append(await run_pipeline(settings, spec(f"off{r}"), N))
            async with otel.tracing(url):
                on.append(await run_pipeline(settings, spec(f"on{r}"), N))
        sent = await otel.stats(url)
    table(
        "(c) tracing: topic -> 3-step jq chain (jaq) -> topic, in this process (events/s)",
        ["tracing", "events/s", "ratio to off"],
        [
            ["off (no endpoint: no provider, no spans)", f"{max(off):,.0f}", "1.00x"],
            [
                "on: SDK batch processor, OTLP/HTTP to a local collector",
                f"{max(on):,.0f}",
                f"{max(on) / max(off):.2f}x",
            ],
        ],
    )
    console.print(
        f"best of {PEER_ROUNDS} interleaved rounds each: off "
        f"{', '.join(f'{v:,.0f}' for v in off)}; on {', '.join(f'{v:,.0f}' for v in on)} "
        f"events/s; the collector got {sent['requests']} exports, {sent['bytes']:,} bytes; "
        f"peak RSS of this process {self_peak_rss_mb():.0f} MiB"
    )


async def run(bootstrap: str, db_url: str) -> None:
    settings = Settings.model_validate(
        {
            "kafka": {"bootstrap": bootstrap, "linger_ms": 5},
            "database": {"url": db_url, "pool_max": 4},
        }
    )
    stamp = int(time.time())
    if WORKERS_ONLY:
        console.print(f"BENCH_WORKERS_ONLY: the scaled-out pipeline only; {cpu_note()}")
        await scaled_out(settings, bootstrap, db_url, stamp)
        return
    if otel.ONLY:
        console.print(f"{N} events (BENCH_OTEL=only: tracing on against off); {cpu_note()}")
        await tracing_on_and_off(settings, stamp)
        return
    src = await make_topic(settings, f"bench-pipe-src-{stamp}")
    size = await fill(settings, src, N)
    console.print(f"{N} events, {size}-byte values, acks=all; {cpu_note()}")

    raw_rounds = [
        await raw_passthrough(
            bootstrap, src, await make_topic(settings, f"bp-raw{r}-{stamp}"), N, f"raw{r}-{src}"
        )
        for r in range(PEER_ROUNDS)
    ]
    raw = max(raw_rounds)
    pipe, pipe_jaq = [
        await run_pipeline(
            settings,
            {
                "name": f"bench-{tag}-{stamp}",
                "source": {"topics": [src]},
                "steps": steps,
                "sinks": [{"topic": {"topic": f"bp-{tag}-{stamp}"}}],
            },
            N,
        )
        for tag, steps in (("a", STEPS), ("aj", STEPS_JAQ))
    ]
    pm_src = await make_topic(settings, f"bench-pm-src-{stamp}")
    await fill(settings, pm_src, N_PER_MESSAGE)
    per_msg = await faust_per_message(
        bootstrap, pm_src, await make_topic(settings, f"bp-pm-{stamp}"), N_PER_MESSAGE
    )
    rss = self_peak_rss_mb()
    scaled = await scaled_out(settings, bootstrap, db_url, stamp)

    def verdict(v: float) -> str:
        return (
            f">=0.5x raw: {'met' if v / raw >= 0.5 else 'MISSED'}; "
            f">=10x per-message ({v / per_msg:.1f}x): "
            f"{'met' if v / per_msg >= 10 else 'MISSED'}; "
            f">=12,000/s: {'met' if v >= 12000 else 'MISSED'}"
        )

    table(
        "(a) topic -> 3-step jq chain -> topic (events/s)",
        ["path", "events/s", "ratio to raw", "target"],
        [
            ["raw aiokafka passthrough (peer)", f"{raw:,.0f}", "1.00x", "-"],
            ["per-message faust agent (peer)", f"{per_msg:,.0f}", f"{per_msg / raw:.2f}x", "-"],
            *(
                [label, f"{v:,.0f}", f"{v / raw:.2f}x", verdict(v)]
                for label, v in [
                    ("eventpipe pipeline, in this process (libjq steps)", pipe),
                    ("eventpipe pipeline, in this process (jaq steps)", pipe_jaq),
                ]
            ),
            *(
                [
                    f"eventpipe run --workers {w} (jaq steps; peak RSS "
                    f"{', '.join(f'{m:.0f}' for m in r.rss_mb)} MiB)",
                    f"{r.rate:,.0f}",
                    f"{r.rate / raw:.2f}x",
                    verdict(r.rate),
                ]
                for w, r in scaled
            ),
        ],
    )
    copy_rounds: list[float] = []
    eo_rounds: list[float] = []
    for r in range(COPY_ROUNDS):  # interleaved: a slow moment of the machine hits both
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            for t in ("bench_raw", "bench_eo"):
                await conn.execute(f"drop table if exists {t}{r}_{stamp}".encode())
                await conn.execute(
                    f"create table {t}{r}_{stamp} (event_id text, order_id text, "
                    "total numeric)".encode()
                )
        copy_rounds.append(await raw_copy(bootstrap, db_url, src, f"bench_raw{r}_{stamp}", N))
        eo_rounds.append(
            await run_pipeline(
                settings,
                {
                    "name": f"bench-b{r}-{stamp}",
                    "source": {"topics": [src]},
                    "sinks": [
                        {
                            "postgres": {
                                "table": f"bench_eo{r}_{stamp}",
                                "columns": {
                                    "event_id": ".id",
                                    "order_id": ".data.order_id",
                                    "total": ".data.total",
                                },
                            }
                        }
                    ],
                    "state": {"dedup_window": 0},
                },
                N,
            )
        )
    rawcopy, eo = max(copy_rounds), max(eo_rounds)
    table(
        "(b) topic -> Postgres (events/s)",
        ["path", "events/s", "ratio", "target"],
        [
            ["raw consume + COPY, no guarantees (peer)", f"{rawcopy:,.0f}", "1.00x", "-"],
            [
                "eventpipe postgres sink, exactly-once",
                f"{eo:,.0f}",
                f"{eo / rawcopy:.2f}x",
                f">=0.7x: {'met' if eo / rawcopy >= 0.7 else 'MISSED'}; "
                f">=10,000/s: {'met' if eo >= 10000 else 'MISSED'}",
            ],
        ],
    )
    console.print(
        f"best of {COPY_ROUNDS} interleaved rounds each: raw COPY "
        f"{', '.join(f'{v:,.0f}' for v in copy_rounds)}; eventpipe "
        f"{', '.join(f'{v:,.0f}' for v in eo_rounds)}"
    )
    if TRACE_MODE == "both":
        off: list[Sample] = []
        on: list[Sample] = []
        for r in range(TRACE_ROUNDS):
            for traced, rounds in ((False, off), (True, on)):
                tag = f"c{r}{'on' if traced else 'off'}"
                spec = {
                    "name": f"bench-{tag}-{stamp}",
                    "source": {"topics": [src]},
                    "steps": STEPS_JAQ,
                    "sinks": [{"topic": {"topic": f"bp-{tag}-{stamp}"}}],
                }
                rounds.append(await pipeline_sample(settings, spec, N, trace=traced))
        trace_cost_table(
            "(d) the cost of the event trace index (one entry per pipeline batch and per "
            "acknowledged output batch)",
            [("pipeline (a), jaq steps, in this process", off, on)],
        )
    console.print(f"peak RSS of this process: {max(rss, self_peak_rss_mb()):.0f} MiB")
    if otel.ON:
        await tracing_on_and_off(settings, stamp)


def main() -> None:
    run_on_stack(run)


if __name__ == "__main__":
    main()
