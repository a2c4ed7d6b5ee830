"""Publishing: the Python API and HTTP publish (single and batch), each beside a raw
aiokafka producer loop sending the same bytes in the same run.

Targets (issue 2): Python API >= 0.7x the raw loop's events/s; HTTP single-event
p99 < 15 ms at 500 requests/s.  The cost of the trace index (issue 17,
``BENCH_TRACE=both``, the default): HTTP publish into a service with the index off
(the peer) and one with it on, interleaved rounds; target >= 0.95x.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaProducer

from bench.common import (
    TRACE_MODE,
    TRACE_ROUNDS,
    Sample,
    console,
    cpu_note,
    cpu_seconds,
    percentile,
    pid_peak_rss_mb,
    run_on_stack,
    self_peak_rss_mb,
    summary_ms,
    table,
    trace_cost_table,
    trace_env,
)
from eventpipe.embedded.process import free_port
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.http import to_http, to_http_batch
from eventpipe.envelope.kafka import to_kafka
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import Publisher
from eventpipe.settings import KafkaSettings, TopicSpec

N = int(os.environ.get("BENCH_EVENTS", "20000"))
SEQ = 1000  # sequential awaited publishes for latency
RATE = 500  # requests/s for the fixed-rate HTTP run
RATE_SECONDS = 8
PAYLOAD = {
    "order_id": "ord-000123",
    "customer": {
        "id": "cus-42",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "tier": "gold",
    },
    "items": [{"sku": f"SKU-{i:04d}", "qty": i % 3 + 1, "price": 12.5 + i} for i in range(5)],
    "currency": "EUR",
    "total": 123.45,
    "notes": "leave at the door " * 4,
}


def make_events(n: int) -> list[CloudEvent]:
    return [
        CloudEvent.create("shop.order.created", "/bench", PAYLOAD, partitionkey=f"c{i % 64}")
        for i in range(n)
    ]


async def raw_loop(kafka: KafkaSettings, topic: str, events: list[CloudEvent]) -> float:
    """The peer: aiokafka, pre-encoded records (same bytes), send all then gather."""
    msgs = [to_kafka(e) for e in events]
    p = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        acks="all",
        linger_ms=kafka.linger_ms,
        max_batch_size=kafka.max_batch_size,
    )
    await p.start()
    try:
        t0 = time.perf_counter()
        futs = [await p.send(topic, m.value, key=m.key, headers=m.headers) for m in msgs]
        await asyncio.gather(*futs)
        return len(msgs) / (time.perf_counter() - t0)
    finally:
        await p.stop()


async def raw_sequential(kafka: KafkaSettings, topic: str, events: list[CloudEvent]) -> list[float]:
    msgs = [to_kafka(e) for e in events]
    p = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=0)
    await p.start()
    lat = []
    try:
        for m in msgs:
            t0 = time.perf_counter()
            await p.send_and_wait(topic, m.value, key=m.key, headers=m.headers)
            lat.append(time.perf_counter() - t0)
    finally:
        await p.stop()
    return lat


async def api_batch(kafka: KafkaSettings, topic: str, events: list[CloudEvent]) -> float:
    async with Publisher(kafka) as pub:
        t0 = time.perf_counter()
        await pub.publish_batch(topic, events)
        return len(events) / (time.perf_counter() - t0)


async def api_concurrent(kafka: KafkaSettings, topic: str, events: list[CloudEvent]) -> float:
    """Many tasks each awaiting publish(): how an app with concurrent requests uses it."""
    async with Publisher(kafka) as pub:
        it = iter(events)

        async def worker() -> None:
            for e in it:
                await pub.publish(topic, e)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(256)))
        return len(events) / (time.perf_counter() - t0)


async def api_sequential(kafka: KafkaSettings, topic: str, events: list[CloudEvent]) -> list[float]:
    k = kafka.model_copy(update={"linger_ms": 0})
    lat = []
    async with Publisher(k) as pub:
        for e in events:
            t0 = time.perf_counter()
            await pub.publish(topic, e)
            lat.append(time.perf_counter() - t0)
    return lat


# ---------------------------------------------------------------------- HTTP
def start_service(
    bootstrap: str, db_url: str, topic: str, *, trace: bool | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``eventpipe run --role ingest``; ``trace``: the index on or off (default:
    BENCH_TRACE)."""
    port = free_port()
    cfg = Path(tempfile.mkdtemp()) / "bench.yaml"
    cfg.write_text(f"service:\n  port: {port}\n  log_level: WARNING\ntopics:\n  - name: {topic}\n")
    env = dict(os.environ, EVENTPIPE_KAFKA_BOOTSTRAP=bootstrap, EVENTPIPE_DATABASE_URL=db_url)
    env.update(trace_env())
    if trace is not None:
        env["EVENTPIPE_TRACE_ENABLED"] = "true" if trace else "false"
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventpipe", "run", "-c", str(cfg), "--role", "ingest"], env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("service did not become ready")


async def http_fixed_rate(url: str, topic: str, events: list[CloudEvent], rate: int) -> list[float]:
    """Open loop: request i is sent at t0 + i/rate whatever the answers do; latency
    counts from when it was due (no coordinated omission)."""
    bodies = [to_http(e, mode="binary") for e in events]
    lat: list[float] = []
    conn = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one(due: float, h: dict[str, str], b: bytes) -> None:
            async with s.post(f"{url}/v1/topics/{topic}/events", data=b, headers=h) as r:
                await r.read()
                assert r.status == 202, r.status
            lat.append(time.perf_counter() - due)

        tasks = []
        t0 = time.perf_counter()
        for i, (h, b) in enumerate(bodies):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(due, h, b)))
        await asyncio.gather(*tasks)
    return lat


async def http_closed(
    url: str,
    topic: str,
    bodies: list[tuple[dict[str, str], bytes]],
    per_request: int,
    concurrency: int,
) -> tuple[float, list[float]]:
    lat: list[float] = []
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        it = iter(bodies)

        async def worker() -> None:
            for h, b in it:
                t = time.perf_counter()
                async with s.post(f"{url}/v1/topics/{topic}/events", data=b, headers=h) as r:
                    await r.read()
                    assert r.status == 202, r.status
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) * per_request / (time.perf_counter() - t0), lat


async def run(bootstrap: str, db_url: str) -> None:
    kafka = KafkaSettings(bootstrap=bootstrap)
    topic = f"bench-publish-{int(time.time())}"
    async with TopicAdmin(kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=topic, partitions=3)])
    events = make_events(N)
    size = len(to_kafka(events[0]).value or b"")
    console.print(f"{N} events, {size}-byte values, acks=all; {cpu_note()}")

    # Warm up both paths once.
    await raw_loop(kafka, topic, events[:2000])
    await api_batch(kafka, topic, make_events(2000))

    raw_rates, api_rates = [], []
    for _ in range(3):  # interleaved rounds; report the best of each
        raw_rates.append(await raw_loop(kafka, topic, events))
        api_rates.append(await api_batch(kafka, topic, make_events(N)))
    raw, api = max(raw_rates), max(api_rates)
    conc = await api_concurrent(kafka, topic, make_events(N))
    raw_lat = await raw_sequential(kafka, topic, events[:SEQ])
    api_lat = await api_sequential(kafka, topic, make_events(SEQ))
    api_rss = self_peak_rss_mb()

    proc, url = start_service(bootstrap, db_url, topic)
    try:
        await http_closed(url, topic, [to_http(e) for e in make_events(500)], 1, 16)  # warm-up
        fixed = await http_fixed_rate(url, topic, make_events(RATE * RATE_SECONDS), RATE)
        single_rate, single_lat = await http_closed(
            url, topic, [to_http(e) for e in make_events(min(N, 8000))], 1, 32
        )
        batch_events = make_events(N)
        batches = [to_http_batch(batch_events[i : i + 100]) for i in range(0, N, 100)]
        batch_rate, batch_lat = await http_closed(url, topic, batches, 100, 8)
        http_rss = pid_peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)

    rows = [
        ["raw aiokafka loop (peer)", f"{raw:,.0f}", "1.00x", "-", "-"],
        ["Publisher.publish_batch", f"{api:,.0f}", f"{api / raw:.2f}x", "-", f"{api_rss:.0f}"],
        [
            "Publisher.publish, 256 tasks",
            f"{conc:,.0f}",
            f"{conc / raw:.2f}x",
            "-",
            f"{api_rss:.0f}",
        ],
        [
            "HTTP single, 32 conns",
            f"{single_rate:,.0f}",
            f"{single_rate / raw:.2f}x",
            summary_ms(single_lat),
            f"{http_rss:.0f}",
        ],
        [
            "HTTP batch x100, 8 conns",
            f"{batch_rate:,.0f}",
            f"{batch_rate / raw:.2f}x",
            summary_ms(batch_lat),
            f"{http_rss:.0f}",
        ],
    ]
    table(
        "publish throughput (events/s; ratio to the raw aiokafka loop)",
        ["path", "events/s", "ratio", "latency", "peak RSS MiB"],
        rows,
    )
    raw_p50, api_p50 = percentile(raw_lat, 50), percentile(api_lat, 50)
    table(
        "one awaited publish at a time (linger 0)",
        ["path", "latency", "p50 ratio"],
        [
            ["raw send_and_wait (peer)", summary_ms(raw_lat), "1.00x"],
            ["Publisher.publish", summary_ms(api_lat), f"{api_p50 / raw_p50:.2f}x"],
        ],
    )
    p99 = percentile(fixed, 99) * 1000
    table(
        f"HTTP single-event publish at a fixed {RATE} requests/s for {RATE_SECONDS}s",
        ["requests", "latency", "target"],
        [[str(len(fixed)), summary_ms(fixed), f"p99 < 15 ms: {'met' if p99 < 15 else 'MISSED'}"]],
    )
    console.print(
        f"target Python API >= 0.7x raw loop: {'met' if api / raw >= 0.7 else 'MISSED'} "
        f"({api / raw:.2f}x)"
    )
    if TRACE_MODE == "both":
        await trace_cost(bootstrap, db_url, topic)


async def trace_cost(bootstrap: str, db_url: str, topic: str) -> None:
    """HTTP publish into two services, the trace index off in one and on in the other,
    interleaved rounds of the same requests; each service's CPU time per event."""
    procs = {t: start_service(bootstrap, db_url, topic, trace=t) for t in (False, True)}
    paths = {"HTTP batch x100, 8 conns": (100, 8), "HTTP single, 32 conns": (1, 32)}
    samples: dict[tuple[str, bool], list[Sample]] = {}
    try:
        for _proc, url in procs.values():  # warm-up
            await http_closed(url, topic, [to_http(e) for e in make_events(500)], 1, 16)
        for _ in range(TRACE_ROUNDS):
            for path, (per, conns) in paths.items():
                for traced, (proc, url) in procs.items():
                    n = N if per > 1 else min(N, 8000)
                    events = make_events(n)
                    bodies = (
                        [to_http_batch(events[i : i + per]) for i in range(0, n, per)]
                        if per > 1
                        else [to_http(e) for e in events]
                    )
                    before = cpu_seconds(proc.pid)
                    rate, _ = await http_closed(url, topic, bodies, per, conns)
                    cpu_us = (cpu_seconds(proc.pid) - before) / n * 1e6
                    samples.setdefault((path, traced), []).append(Sample(rate, cpu_us))
        rss = {traced: pid_peak_rss_mb(proc.pid) for traced, (proc, _) in procs.items()}
    finally:
        for proc, _url in procs.values():
            proc.terminate()
            proc.wait(30)
    trace_cost_table(
        "the cost of the trace index: HTTP publish (one index entry per acknowledged record batch)",
        [(p, samples[(p, False)], samples[(p, True)]) for p in paths],
    )
    console.print(
        f"peak RSS of the services: index off {rss[False]:.0f} MiB, on {rss[True]:.0f} MiB"
    )


def main() -> None:
    run_on_stack(run)


if __name__ == "__main__":
    main()
