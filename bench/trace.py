"""The event trace: how fast "what happened to event X" is answered on a topic of
1,000,000 events (BENCH_TRACE_EVENTS), beside a raw aiokafka scan of the topic for
the id (the peer: what finding it without the index takes), measured in the same run.

1. One ``eventpipe run --role ingest`` process; the topic is filled through the
   publish API (``POST /v1/topics/{topic}/events``, 1,000 events a request), so the
   index is built by the real write path.
2. BENCH_TRACE_QUERIES ids at random positions are traced through
   ``GET /v1/trace/{id}`` on that service, and a few through ``eventpipe trace ID
   --json`` (a new process each time, start-up included); every answer is checked
   against the offsets the publish API answered.
3. The index as a day of traffic leaves it: the fill takes a minute, so its index
   has few, large rows; 1,000,000 events arriving evenly over 24 h make one row a
   second per partition (the writer's flush) and as many for each pipeline reading
   the topic.  The fill's rows are replaced by that shape, built from the same
   acknowledged offsets (plus one pipeline's read rows, every record delivered),
   and the random traces are timed again.  Target: every answer within 2 s.
4. The peer reads the whole topic from the beginning looking for one id (an id can
   be on it more than once, so a scan cannot stop at the first hit).

Prints answer latency p50 / max, the ratio to the scan, the index's size per event,
and the peak RSS of the service, of the trace command and of this process.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import subprocess
import sys
import time
from array import array
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import console, cpu_note, percentile, pid_peak_rss_mb, run_on_stack, table
from bench.common import self_peak_rss_mb as own_rss
from bench.publish import start_service as publish_service
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.http import to_http_batch
from eventpipe.trace.writer import copy_rows
from eventpipe.trace_hook import DELIVERED, fingerprints

N = int(os.environ.get("BENCH_TRACE_EVENTS", "1000000"))
QUERIES = int(os.environ.get("BENCH_TRACE_QUERIES", "20"))
CLI_QUERIES = int(os.environ.get("BENCH_TRACE_CLI_QUERIES", "5"))
PARTITIONS = 3  # kafka.default_partitions, which the service gives the topic
PER_REQUEST = 1000
CONNECTIONS = 4
TARGET_S = 2.0
TOKEN = "bench-trace-token"
DAY_S = 86_400


def start_service(bootstrap: str, db_url: str, topic: str) -> tuple[subprocess.Popen[bytes], str]:
    """bench/publish.py's ingest service (3 partitions, the default), with the index
    on and the admin token /v1/trace asks for."""
    os.environ["EVENTPIPE_SERVICE_ADMIN_TOKEN"] = TOKEN
    return publish_service(bootstrap, db_url, topic, trace=True)


def event_id(topic: str, i: int) -> str:
    return f"{topic}-{i}"


class Acks:
    """Where the publish API said each event went: partition and offset by index."""

    def __init__(self, n: int) -> None:
        self.partition = array("b", [-1]) * n
        self.offset = array("q", [-1]) * n


async def fill(url: str, topic: str, acks: Acks) -> float:
    starts = iter(range(0, N, PER_REQUEST))

    async def worker(http: aiohttp.ClientSession) -> None:
        for start in starts:
            idx = range(start, min(N, start + PER_REQUEST))
            events = [
                CloudEvent.create(
                    "shop.order.created",
                    "/bench/trace",
                    {"order": i, "customer": f"c-{i % 977}", "total": i % 500},
                    id=event_id(topic, i),
                    partitionkey=f"c-{i % 977}",
                )
                for i in idx
            ]
            headers, body = to_http_batch(events)
            async with http.post(
                f"{url}/v1/topics/{topic}/events", data=body, headers=headers
            ) as r:
                assert r.status == 202, await r.text()
                answer = orjson.loads(await r.read())
            for i, e in zip(idx, answer["events"], strict=True):
                acks.partition[i] = e["partition"]
                acks.offset[i] = e["offset"]

    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(http) for _ in range(CONNECTIONS)))
    return N / (time.perf_counter() - t0)


async def trace_http(url: str, topic: str, picks: list[int], acks: Acks) -> list[float]:
    lat = []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        for i in picks:
            t0 = time.perf_counter()
            async with http.get(f"{url}/v1/trace/{event_id(topic, i)}", headers=auth) as r:
                doc = orjson.loads(await r.read())
            lat.append(time.perf_counter() - t0)
            assert r.status == 200, doc
            places = [(x["partition"], x["offset"]) for x in doc["records"]]
            assert places == [(acks.partition[i], acks.offset[i])], (i, places)
    return lat


def trace_cli(bootstrap: str, db_url: str, topic: str, picks: list[int]) -> list[float]:
    env = dict(os.environ, EVENTPIPE_KAFKA_BOOTSTRAP=bootstrap, EVENTPIPE_DATABASE_URL=db_url)
    lat = []
    for i in picks:
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "eventpipe", "trace", event_id(topic, i), "--json"],
            env=env,
            capture_output=True,
            check=False,
        )
        lat.append(time.perf_counter() - t0)
        assert r.returncode == 0, r.stderr.decode()
    return lat


async def raw_scan(bootstrap: str, topic: str, wanted: str) -> tuple[float, int]:
    """The peer: every record of the topic read, each record's ce_id compared."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        target = wanted.encode()
        t0 = time.perf_counter()
        seen = hits = 0
        while seen < N:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                seen += len(records)
                for r in records:
                    for k, v in r.headers:
                        if k == "ce_id":
                            hits += v == target
                            break
        return time.perf_counter() - t0, hits
    finally:
        await consumer.stop()


async def day_shaped_index(db_url: str, topic: str, acks: Acks) -> tuple[int, int]:
    """Replace the fill's index rows by those of the same events arriving evenly over
    the last 24 h: one row a second per partition, written by the publish API, and
    one a second per partition for a pipeline that delivered every record."""
    start = datetime.now(UTC) - timedelta(seconds=DAY_S)
    by_partition: dict[int, list[tuple[int, int]]] = {p: [] for p in range(PARTITIONS)}
    for i in range(N):
        by_partition[acks.partition[i]].append((acks.offset[i], i))
    produced: list[tuple[Any, ...]] = []
    read: list[tuple[Any, ...]] = []
    for p, recs in by_partition.items():
        recs.sort()
        per_row = max(1, -(-len(recs) // DAY_S))
        for k in range(0, len(recs), per_row):
            chunk = recs[k : k + per_row]
            at = start + timedelta(seconds=k // per_row)
            fps = fingerprints([event_id(topic, i) for _, i in chunk])
            produced.append((at, topic, p, "publish-api", _runs(chunk), fps))
            offsets = [o for o, _ in chunk]
            contiguous = offsets[-1] - offsets[0] + 1 == len(offsets)
            read.append(
                (
                    at + timedelta(milliseconds=300),
                    "bench-orders",
                    topic,
                    p,
                    offsets[0],
                    offsets[-1],
                    None if contiguous else offsets,
                    DELIVERED * len(chunk),
                    fps,
                    None,
                    ["postgres"],
                )
            )
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("delete from eventpipe.trace_produced where topic = %s", (topic,))
        async with conn.cursor() as cur:
            await copy_rows(cur, produced, read)
        await conn.execute("analyze eventpipe.trace_produced")
        await conn.execute("analyze eventpipe.trace_read")
    return len(produced), len(read)


def _runs(chunk: list[tuple[int, int]]) -> list[int]:
    """Base offset and count of each run of consecutive offsets."""
    out: list[int] = []
    for offset, _ in chunk:
        if out and out[-2] + out[-1] == offset:
            out[-1] += 1
        else:
            out.extend((offset, 1))
    return out


async def index_size(db_url: str) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cur = await conn.execute(
            "select (select count(*) from eventpipe.trace_produced) + "
            "(select count(*) from eventpipe.trace_read), "
            "pg_total_relation_size('eventpipe.trace_produced') + "
            "pg_total_relation_size('eventpipe.trace_read')"
        )
        rows, size = await cur.fetchone() or (0, 0)
    return int(rows), int(size)


async def run(bootstrap: str, db_url: str) -> None:
    topic = f"bench-trace-{int(time.time())}"
    console.print(
        f"{N:,} events through the publish API ({PER_REQUEST} a request, {CONNECTIONS} "
        f"connections) onto {PARTITIONS} partitions; {cpu_note()}"
    )
    proc, url = start_service(bootstrap, db_url, topic)
    acks = Acks(N)
    try:
        fill_rate = await fill(url, topic, acks)
        await asyncio.sleep(3)  # the writer's last flush
        fill_rows, fill_bytes = await index_size(db_url)
        rng = random.Random(17)
        picks = [rng.randrange(N) for _ in range(QUERIES)]
        await trace_http(url, topic, picks[:2], acks)  # warm-up (connections, plans)
        as_filled = await trace_http(url, topic, picks, acks)
        cli = await asyncio.to_thread(trace_cli, bootstrap, db_url, topic, picks[:CLI_QUERIES])
        cli_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        produced, read = await day_shaped_index(db_url, topic, acks)
        day_rows, day_bytes = await index_size(db_url)
        day = await trace_http(url, topic, picks, acks)
        service_rss = pid_peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    scan_s, hits = await raw_scan(bootstrap, topic, event_id(topic, picks[0]))
    assert hits == 1, hits

    def row(label: str, lat: list[float]) -> list[str]:
        p50, worst = percentile(lat, 50), max(lat)
        return [
            label,
            f"{p50 * 1000:,.0f}",
            f"{worst * 1000:,.0f}",
            f"{p50 / scan_s:.3f}x",
            f"max <= {TARGET_S:g} s: {'met' if worst <= TARGET_S else 'MISSED'}",
        ]

    table(
        f"trace of an event at a random position of {N:,} (ms); ratio of p50 to the scan",
        ["path", "p50", "max", "ratio to scan", "target"],
        [
            [
                "raw aiokafka scan of the topic for the id (peer)",
                f"{scan_s * 1000:,.0f}",
                "-",
                "1.000x",
                "-",
            ],
            row(f"GET /v1/trace, index as the fill left it ({fill_rows:,} rows)", as_filled),
            row(
                f"GET /v1/trace, index of a day ({produced:,} produced + {read:,} pipeline rows)",
                day,
            ),
            row("eventpipe trace --json, a new process each", cli),
        ],
    )
    console.print(
        f"fill through the publish API: {fill_rate:,.0f} events/s (the index on); index "
        f"{fill_bytes / N:.1f} bytes/event as filled ({fill_rows:,} rows), "
        f"{day_bytes / N:.1f} bytes/event as a day's traffic ({day_rows:,} rows, with one "
        f"pipeline's)"
    )
    console.print(
        f"peak RSS: service {service_rss:.0f} MiB; eventpipe trace {cli_rss:.0f} MiB; "
        f"this process {own_rss():.0f} MiB"
    )


def main() -> None:
    run_on_stack(run)


if __name__ == "__main__":
    main()
