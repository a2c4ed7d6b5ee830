"""Postgres CDC: sustained row changes/s from commit to broker acknowledgement, and
commit-to-topic latency at a fixed rate, beside two ceilings measured in the same run:

* the producer ceiling: a raw aiokafka producer sending the same number of
  pre-built records (same shape and size as the CDC records);
* the slot ceiling: ``pg_logical_slot_get_binary_changes`` draining the same changes
  from a second slot, without decoding.

The connector runs as its own process (``eventpipe run --role cdc``), as deployed;
its peak RSS is reported.  Latency first (on its own table and topic): a writer
commits at a fixed rate (open loop) and a consumer reads the topic; latency = time
read - commit time (the event's ``time``).  Then throughput: the connector is
paused (SIGSTOP) while N changes are committed, then resumed; the clock runs until
the slot's confirmed_flush_lsn (moved only after the broker acknowledged) reaches
the last commit.

Targets (issue 5): >= 10,000 row changes/s and >= 0.3x the producer ceiling;
commit-to-topic p99 < 100 ms at 2,000 changes/s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import (
    console,
    cpu_note,
    percentile,
    pid_peak_rss_mb,
    run_on_stack,
    summary_ms,
    table,
)
from eventpipe.connectors.postgres_cdc import pgoutput as pg
from eventpipe.connectors.postgres_cdc import slot as slots
from eventpipe.connectors.postgres_cdc.events import EventBuilder
from eventpipe.connectors.postgres_cdc.types import TypeRegistry
from eventpipe.envelope.event import parse_time
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.kafka.client import producer_kwargs
from eventpipe.settings import KafkaSettings

N = int(os.environ.get("BENCH_CDC_CHANGES", "200000"))
RATE = 2000  # changes/s for the latency run
RATE_SECONDS = int(os.environ.get("BENCH_CDC_RATE_SECONDS", "10"))
ROWS_PER_TXN = 10  # at 2,000/s: a commit every 5 ms
NAME = "bench"
PREFIX = f"bench{int(time.time())}"  # fresh topics every run
TABLE = "bench_orders"
LAT_TABLE = (
    "bench_orders_latency"  # its own topic: Tansu (memory storage) slows as a partition grows
)
COLUMNS = """(
    id bigint primary key,
    customer text not null,
    amount numeric(12, 2) not null,
    status text not null,
    created_at timestamptz not null default now(),
    qty int not null
)"""
DDL = f"""
drop table if exists {TABLE};
drop table if exists {LAT_TABLE};
create table {TABLE} {COLUMNS};
create table {LAT_TABLE} {COLUMNS}
"""


def insert_sql(table: str) -> str:
    return (
        f"insert into {table} select g, 'customer-' || (g %% 1000), g * 1.25, 'new', now(),"
        " g %% 7 from generate_series(%s::bigint, %s::bigint) g"
    )


INSERT = insert_sql(TABLE)


# ------------------------------------------------------------------ connector
def start_connector(bootstrap: str, db_url: str) -> tuple[subprocess.Popen[bytes], Path]:
    cfg = Path(tempfile.mkdtemp()) / "cdc.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "service": {"log_level": "WARNING"},
                "sources": [
                    {
                        "type": "postgres_cdc",
                        "name": NAME,
                        "tables": [TABLE, LAT_TABLE],
                        "snapshot": "never",
                        "slot": "bench_cdc",
                        "publication": "bench_cdc",
                        "topic_prefix": PREFIX,
                    }
                ],
            }
        )
    )
    log = cfg.with_suffix(".log")
    env = dict(os.environ, EVENTPIPE_KAFKA_BOOTSTRAP=bootstrap, EVENTPIPE_DATABASE_URL=db_url)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventpipe", "run", "-c", str(cfg), "--role", "cdc"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, log


async def confirmed(conn: psycopg.AsyncConnection[Any], slot: str) -> int:
    info = await slots.slot_info(conn, slot)
    return info.confirmed_flush_lsn or 0 if info is not None else 0


async def wait_confirmed(
    conn: psycopg.AsyncConnection[Any], slot: str, lsn: int, timeout: float = 600
) -> float:
    """Seconds until the slot confirmed ``lsn``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if await confirmed(conn, slot) >= lsn:
            return time.perf_counter() - t0
        await asyncio.sleep(0.005)
    raise TimeoutError(f"slot {slot} did not reach {lsn:X}")


async def wait_ready(
    conn: psycopg.AsyncConnection[Any], proc: subprocess.Popen[bytes], log: Path
) -> None:
    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"connector exited; see {log}")
        info = await slots.slot_info(conn, "bench_cdc")
        if info is not None:
            lsn = await slots.flush_lsn(conn)
            await wait_confirmed(conn, "bench_cdc", lsn, 60)
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"connector did not start; see {log}")


# ---------------------------------------------------------------------- writes
async def write_backlog(conn: psycopg.AsyncConnection[Any], n: int) -> int:
    """n row changes: three quarters inserts, one quarter updates, 1,000 per transaction."""
    inserts = n * 3 // 4
    for start in range(1, inserts + 1, 1000):
        await conn.execute(INSERT, (start, min(start + 999, inserts)))
    done = inserts
    lo = 1
    while done < n:
        hi = lo + min(1000, n - done) - 1
        await conn.execute(
            f"update {TABLE} set status = 'paid', qty = qty + 1 where id between %s and %s",
            (lo, hi),
        )
        done += hi - lo + 1
        lo = hi + 1
    return await slots.flush_lsn(conn)


# --------------------------------------------------------------------- ceilings
def sample_records(n: int) -> list[KafkaMessage]:
    """Records shaped exactly like the connector's (same envelope, headers, sizes)."""
    b = EventBuilder(
        name=NAME,
        prefix=NAME,
        type_prefix=NAME,
        source_uri=f"/eventpipe/postgres_cdc/{NAME}",
        database="eventpipe",
        topic_template="{prefix}.{schema}.{table}",
        message_topic="{prefix}.message",
        toast_placeholder="__debezium_unavailable_value",
    )
    rel = pg.Relation(
        1,
        "public",
        TABLE,
        "d",
        [
            pg.Column("id", 20, -1, True),
            pg.Column("customer", 25, -1, False),
            pg.Column("amount", 1700, -1, False),
            pg.Column("status", 25, -1, False),
            pg.Column("created_at", 1184, -1, False),
            pg.Column("qty", 23, -1, False),
        ],
    )
    t = b.table_info(rel, TypeRegistry(), ["id"])
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        row = {
            "id": i,
            "customer": f"customer-{i % 1000}",
            "amount": f"{i * 1.25:.2f}",
            "status": "new",
            "created_at": "2026-01-01T00:00:00.123456Z",
            "qty": i % 7,
        }
        [(_, msg, _)] = b.change(
            t,
            "c",
            None,
            row,
            None,
            event_id=f"0/1D1C420:{i}",
            time=now,
            commit_ms=1,
            commit_lsn="0/1D1C420",
            xid=1234,
            lsn=30000000 + i,
            now_ms=2,
        )
        out.append(msg)
    return out


async def producer_ceiling(kafka: KafkaSettings, topic: str, records: list[KafkaMessage]) -> float:
    p = AIOKafkaProducer(**producer_kwargs(kafka))
    await p.start()
    try:
        t0 = time.perf_counter()
        futs = [await p.send(topic, m.value, key=m.key, headers=m.headers) for m in records]
        await asyncio.gather(*futs)
        return len(records) / (time.perf_counter() - t0)
    finally:
        await p.stop()


async def slot_ceiling(conn: psycopg.AsyncConnection[Any], slot: str, n: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    messages = await slots.drain_count(conn, slot, "bench_cdc")
    took = time.perf_counter() - t0
    return n / took, messages


# --------------------------------------------------------------------- latency
async def fixed_rate(
    db_url: str, bootstrap: str, topic: str, rate: int, seconds: int, start_id: int
) -> list[float]:
    total = rate * seconds
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=5, enable_auto_commit=False
    )
    await consumer.start()
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or {0}
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    for tp, offset in (await consumer.end_offsets(tps)).items():
        consumer.seek(tp, offset)
    lat: list[float] = []
    stop = asyncio.Event()

    async def consume() -> None:
        while len(lat) < total and not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50, max_records=5000)
            now = time.time()
            for recs in batch.values():
                for r in recs:
                    if r.key is None or int(r.key) < start_id:
                        continue  # an earlier run's record
                    ce_time = next(v for k, v in r.headers if k == "ce_time")
                    lat.append(now - parse_time(ce_time.decode()).timestamp())

    reader = asyncio.create_task(consume())
    try:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            t0 = time.perf_counter()
            interval = ROWS_PER_TXN / rate
            next_id = start_id
            for i in range(total // ROWS_PER_TXN):
                due = t0 + i * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await conn.execute(insert_sql(LAT_TABLE), (next_id, next_id + ROWS_PER_TXN - 1))
                next_id += ROWS_PER_TXN
            achieved = total / (time.perf_counter() - t0)
        await asyncio.wait_for(reader, 60)
    finally:
        stop.set()
        if not reader.done():
            reader.cancel()
        await consumer.stop()
    console.print(f"latency run: {achieved:,.0f} changes/s committed (asked {rate:,})")
    return lat


# ------------------------------------------------------------------------ main
async def run(bootstrap: str, db_url: str) -> None:
    kafka = KafkaSettings(bootstrap=bootstrap)
    topic = f"{PREFIX}.public.{TABLE}"
    console.print(
        f"{N:,} row changes (3/4 inserts, 1/4 updates, 1,000 per transaction); {cpu_note()}"
    )
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        for s in ("bench_cdc", "bench_cdc_raw"):
            if await slots.slot_info(conn, s) is not None:
                await slots.drop_slot(conn, s)
        await conn.execute(DDL)
        await conn.execute("drop publication if exists bench_cdc")
        proc, log = start_connector(bootstrap, db_url)
        try:
            await wait_ready(conn, proc, log)
            # warm-up: a few thousand changes through the running connector
            await conn.execute(INSERT, (10_000_000, 10_004_999))
            await wait_confirmed(conn, "bench_cdc", await slots.flush_lsn(conn))

            # --- latency at a fixed rate
            lat = await fixed_rate(
                db_url, bootstrap, f"{PREFIX}.public.{LAT_TABLE}", RATE, RATE_SECONDS, 1
            )
            # --- throughput: a backlog written while the connector is paused
            await slots.create_slot(conn, "bench_cdc_raw")  # the slot ceiling's slot
            proc.send_signal(signal.SIGSTOP)
            t_write = time.perf_counter()
            end_lsn = await write_backlog(conn, N)
            write_rate = N / (time.perf_counter() - t_write)
            proc.send_signal(signal.SIGCONT)
            took = await wait_confirmed(conn, "bench_cdc", end_lsn)
            cdc_rate = N / took
            slot_rate, messages = await slot_ceiling(conn, "bench_cdc_raw", N)
            await slots.drop_slot(conn, "bench_cdc_raw")

            rss = pid_peak_rss_mb(proc.pid)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
                proc.wait(60)
            for leftover in ("bench_cdc", "bench_cdc_raw"):
                if await slots.slot_info(conn, leftover) is not None:
                    await slots.drop_slot(conn, leftover)
            await conn.execute("drop publication if exists bench_cdc")
            await conn.execute(f"drop table if exists {TABLE}, {LAT_TABLE}")

    records = sample_records(N)
    size = len(records[0].value or b"")
    raw_rate = max([await producer_ceiling(kafka, f"{topic}.raw", records) for _ in range(2)])

    table(
        f"CDC throughput: {N:,} committed row changes to broker acknowledgement "
        f"(records ~{size} bytes, acks=all)",
        ["path", "changes/s", "ratio to producer", "peak RSS MiB"],
        [
            [
                "eventpipe postgres_cdc (decode, envelope, produce, ack, advance)",
                f"{cdc_rate:,.0f}",
                f"{cdc_rate / raw_rate:.2f}x",
                f"{rss:.0f}",
            ],
            [
                "raw aiokafka producer, pre-built records (producer ceiling)",
                f"{raw_rate:,.0f}",
                "1.00x",
                "-",
            ],
            [
                f"pg_logical_slot_get_binary_changes, no decoding (slot ceiling; "
                f"{messages:,} msgs)",
                f"{slot_rate:,.0f}",
                f"{slot_rate / raw_rate:.2f}x",
                "-",
            ],
            ["(the backlog was written at)", f"{write_rate:,.0f}", "-", "-"],
        ],
    )
    p99 = percentile(lat, 99) * 1000
    table(
        f"commit-to-topic latency at {RATE:,} changes/s for {RATE_SECONDS}s "
        f"({ROWS_PER_TXN} rows per transaction)",
        ["records", "latency", "target"],
        [[f"{len(lat):,}", summary_ms(lat), f"p99 < 100 ms: {'met' if p99 < 100 else 'MISSED'}"]],
    )
    ok_rate = cdc_rate >= 10_000
    ok_ratio = cdc_rate / raw_rate >= 0.3
    console.print(
        f"target >= 10,000 changes/s: {'met' if ok_rate else 'MISSED'} ({cdc_rate:,.0f}); "
        f"target >= 0.3x producer: {'met' if ok_ratio else 'MISSED'} ({cdc_rate / raw_rate:.2f}x)"
    )


def main() -> None:
    run_on_stack(run)


if __name__ == "__main__":
    main()
