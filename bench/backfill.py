"""Backfill beside the live pipeline, on the same topic and table.

A topic of ``BENCH_BACKFILL_EVENTS`` events (default 1,000,000, on
``BENCH_BACKFILL_PARTITIONS`` partitions) goes through a 5-step pipeline (jq,
filter, set, drop_fields, jq) into a Postgres upsert with an ``order_by`` column:

1. the live pipeline, as one ``eventpipe run --role pipelines`` process, drains
   the topic into the empty table (the peer; its events/s from its metrics, as
   bench/workers.py counts them);
2. ``eventpipe backfill --mode live --workers W`` over the whole topic, into the
   table as the live pipeline left it (every row is re-applied: the same
   versions), timed as the command's wall time, for each W in
   ``BENCH_BACKFILL_WORKERS`` (default ``auto``);
3. ``eventpipe backfill --mode dry_run --workers auto``.

Each prints its wall time, events/s, the ratio to the live pipeline and the peak
RSS of eventpipe's processes (the backfill's coordinator and each worker, from its
report).  Targets (issue 19): a live backfill of 1,000,000 events in at most 60 s
on the 2-core machine, and at least 0.8x the live pipeline; RSS under 300 MB.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import yaml

from bench.common import console, cpu_note, run_on_stack, table
from bench.publish import PAYLOAD
from bench.workers import run_workers
from eventpipe.backfill.usage import cpu_count
from eventpipe.envelope import CloudEvent
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings, TopicSpec

N = int(os.environ.get("BENCH_BACKFILL_EVENTS", "1000000"))
PARTITIONS = int(os.environ.get("BENCH_BACKFILL_PARTITIONS", "4"))
WORKERS = os.environ.get("BENCH_BACKFILL_WORKERS", "auto").split(",")
TARGET_S = 60.0
TARGET_RATIO = 0.8
TARGET_RSS_MB = 300.0

STEPS: list[Any] = [
    {
        "jq": "{order_id, customer: .customer.id, tier: .customer.tier, "
        "email: .customer.email, total, items: [.items[] | {sku, qty, price}], notes}"
    },
    {"filter": ".data.total > 10"},
    {"set": {"fields": {"subject": ".data.order_id"}}},
    {"drop_fields": ["notes", "email"]},
    {"jq": ". + {big: (.total > 100), n_items: (.items | length)}"},
]
COLUMNS = {
    "event_id": ".id",
    "order_id": ".data.order_id",
    "customer": ".data.customer",
    "total": ".data.total",
    "big": ".data.big",
    "items": ".data.items",
    "at": ".time",
}
DDL = (
    "create table {t} (event_id text primary key, order_id text, customer text, "
    "total numeric, big boolean, items jsonb, at timestamptz)"
)


@dataclass
class Run:
    label: str
    wall_s: float
    stack_cpu_s: float  # the broker's and the database's CPU seconds meanwhile
    report: dict[str, Any]

    @property
    def rate(self) -> float:
        return N / self.wall_s

    @property
    def rss(self) -> list[float]:
        peak = self.report.get("peak_rss_mb") or {}
        return [peak.get("coordinator", float("nan")), *peak.get("workers", [])]

    @property
    def cpu(self) -> list[float]:
        cpu = self.report.get("cpu_s") or {}
        return [cpu.get("coordinator", float("nan")), *cpu.get("workers", [])]

    def where(self) -> str:
        """Where the time went: CPU by process, and batch time per stage."""
        stages = sorted(self.report.get("stage_seconds", {}).items(), key=lambda kv: -kv[1])
        return (
            f"{self.label}: wall {self.wall_s:.1f}s on {cpu_count()} cores; CPU s: eventpipe "
            f"{sum(self.cpu):.1f} (coordinator / workers "
            + " / ".join(f"{v:.1f}" for v in self.cpu)
            + f"), broker + database {self.stack_cpu_s:.1f}; batch time by stage (s, summed "
            "over lanes; sinks include waiting): " + ", ".join(f"{k} {v:.1f}" for k, v in stages)
        )


async def fill(settings: Settings, topic: str, n: int) -> None:
    async with Publisher(settings) as pub:
        for start in range(0, n, 5000):
            events = [
                CloudEvent.create(
                    "shop.order.created",
                    "/bench",
                    PAYLOAD,
                    id=f"{topic}-{i}",
                    partitionkey=f"c{i % 64}",
                )
                for i in range(start, min(n, start + 5000))
            ]
            await pub.publish_batch(topic, events)


def stack_cpu_s() -> float:
    """CPU seconds of this process's descendants alive now (the embedded broker and
    database; PostgreSQL's exited backends through the postmaster's child times)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        f = raw[raw.rindex(")") + 2 :].split()
        parent[int(entry)] = int(f[1])
        times[int(entry)] = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    me = os.getpid()
    total = 0
    for pid, t in times.items():
        p = parent.get(pid)
        while p is not None and p not in (0, me):
            p = parent.get(p)
        if p == me:
            total += t
    return total / tick


def _backfill(
    cfg: Path, env: dict[str, str], args: list[str]
) -> tuple[float, float, dict[str, Any]]:
    """(wall s, broker + database CPU s, report) of one ``eventpipe backfill``."""
    cmd = [sys.executable, "-m", "eventpipe", "backfill", "-c", str(cfg), *args]
    cmd += ["--json", "--no-progress"]
    cpu0 = stack_cpu_s()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, timeout=3600, check=False)
    wall = time.perf_counter() - t0
    stack = stack_cpu_s() - cpu0
    if r.returncode != 0:
        raise RuntimeError(f"backfill exited with {r.returncode}:\n{r.stderr.decode()[-3000:]}")
    report = orjson.loads(r.stdout)
    if report["counts"]["read"] != N:
        raise RuntimeError(f"the backfill read {report['counts']['read']} of {N} events")
    return wall, stack, report


async def run(bootstrap: str, db_url: str) -> None:
    settings = Settings.model_validate(
        {"kafka": {"bootstrap": bootstrap, "linger_ms": 5}, "database": {"url": db_url}}
    )
    stamp = int(time.time())
    topic = f"bench-bf-{stamp}"
    tbl = f"bench_bf_{stamp}"
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=topic, partitions=PARTITIONS)])
    t0 = time.perf_counter()
    await fill(settings, topic, N)
    console.print(
        f"{N:,} events on {PARTITIONS} partitions (filled in {time.perf_counter() - t0:.0f}s); "
        f"5 steps into a Postgres upsert (order_by); {cpu_note()}"
    )
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(DDL.format(t=tbl).encode())
    spec: dict[str, Any] = {
        "name": topic,
        "source": {"topics": [topic], "session_timeout": "6s"},
        "steps": STEPS,
        "sinks": [
            {
                "postgres": {
                    "table": tbl,
                    "mode": "upsert",
                    "key": ["event_id"],
                    "columns": COLUMNS,
                    "order_by": "at",
                }
            }
        ],
    }
    live = await run_workers(bootstrap, db_url, spec, N, 1)
    console.print(
        f"live pipeline (1 process): {live.rate:,.0f} events/s over {live.counted:,} events, "
        f"peak RSS {live.rss_mb[0]:.0f} MiB"
    )

    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    cfg = work / "eventpipe.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"service": {"log_level": "WARNING"}, "kafka": {"linger_ms": 5}, "pipelines": [spec]}
        )
    )
    env = dict(os.environ, EVENTPIPE_KAFKA_BOOTSTRAP=bootstrap, EVENTPIPE_DATABASE_URL=db_url)
    window = ["--pipeline", topic, "--from", "1d", "--to", "now"]
    runs: list[Run] = []
    for w in WORKERS:
        wall, stack, report = await asyncio.to_thread(
            _backfill, cfg, env, [*window, "--mode", "live", "--workers", w]
        )
        runs.append(Run(f"live, --workers {w}", wall, stack, report))
    wall, stack, report = await asyncio.to_thread(
        _backfill, cfg, env, [*window, "--mode", "dry_run", "--workers", "auto"]
    )
    runs.append(Run("dry_run, --workers auto", wall, stack, report))

    table(
        f"backfill of {N:,} events beside the live pipeline (same topic and table)",
        ["run", "wall s", "events/s", "vs live", "peak RSS MiB"],
        [
            [
                "live pipeline, 1 process (peer)",
                "-",
                f"{live.rate:,.0f}",
                "1.00x",
                f"{live.rss_mb[0]:.0f}",
            ],
            *(
                [
                    f"backfill {r.label} ({r.report['workers']} proc.)",
                    f"{r.wall_s:.1f}",
                    f"{r.rate:,.0f}",
                    f"{r.rate / live.rate:.2f}x",
                    " / ".join(f"{v:.0f}" for v in r.rss),
                ]
                for r in runs
            ),
        ],
    )
    for r in runs:
        scaled = r.wall_s * 1_000_000 / N
        rss_ok = max(r.rss) < TARGET_RSS_MB
        if "dry_run" in r.label:
            console.print(
                f"target, {r.label}: RSS < {TARGET_RSS_MB:.0f} MiB: "
                + ("met" if rss_ok else "MISSED")
            )
            continue
        console.print(
            f"targets, {r.label}: <= {TARGET_S:.0f}s for 1M events ({scaled:.0f}s at this "
            f"rate): {'met' if scaled <= TARGET_S else 'MISSED'}; >= {TARGET_RATIO}x live "
            f"({r.rate / live.rate:.2f}x): "
            f"{'met' if r.rate / live.rate >= TARGET_RATIO else 'MISSED'}; RSS < "
            f"{TARGET_RSS_MB:.0f} MiB: {'met' if rss_ok else 'MISSED'}"
        )
    for r in runs:
        console.print(r.where())


def main() -> None:
    run_on_stack(run)


if __name__ == "__main__":
    main()
