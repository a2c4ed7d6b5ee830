"""Dead-letter replay beside a raw copy of the same records.

A dead-letter topic of ``BENCH_DLQ_EVENTS`` records (default 200,000: CloudEvents
of bench/publish.py's payload, dead-lettered at the transform stage with the
``eventpipe.dlq.*`` headers) is

* copied by the peer: a raw aiokafka process reading the topic and producing
  each record as it is (key, value, headers) to another topic, every send
  acknowledged (acks=all);
* replayed by ``eventpipe dlq replay --topic T --to T2 --force`` (every record
  decoded, re-produced with its original value and headers, each replay recorded
  in Postgres).

Both run as processes of their own, timed by their wall time (start-up
included), ``BENCH_PEER_ROUNDS`` rounds each, interleaved, the best of each
compared; peak RSS of eventpipe's process from its rusage.  Target (issue 19):
replay at least 0.5x the raw copy's events/s.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import console, cpu_note, run_on_stack, table
from bench.publish import PAYLOAD
from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import to_kafka
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings, TopicSpec

N = int(os.environ.get("BENCH_DLQ_EVENTS", "200000"))
ROUNDS = int(os.environ.get("BENCH_PEER_ROUNDS", "2"))
PARTITIONS = 3
TARGET = 0.5


class StepFailedError(Exception):
    pass


async def fill(settings: Settings, dlq_topic: str, origin: str, n: int) -> None:
    exc = StepFailedError("steps[0].jq: cannot index string with string")
    async with Publisher(settings) as pub:
        writer = DeadLetterWriter(pub, dlq_topic)
        for start in range(0, n, 2000):
            letters = []
            for i in range(start, min(n, start + 2000)):
                ev = CloudEvent.create(
                    "shop.order.created",
                    "/bench",
                    PAYLOAD,
                    id=f"{origin}-{i}",
                    partitionkey=f"c{i}",
                )
                m = to_kafka(ev)
                letters.append(
                    DeadLetter.from_exception(
                        exc,
                        key=m.key,
                        value=m.value,
                        headers=m.headers,
                        pipeline="bench",
                        stage="transform",
                        step="steps[0].jq",
                        origin=Origin(origin, i % PARTITIONS, i // PARTITIONS, 0),
                    )
                )
            await writer.write(letters)


# ----------------------------------------------------------------- raw peer
async def raw_copy(bootstrap: str, src: str, dst: str) -> int:
    """Every record of ``src`` (up to its end now) produced as it is to ``dst``."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await c.start()
    await p.start()
    try:
        tps = [TopicPartition(src, q) for q in sorted(c.partitions_for_topic(src) or ())]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        copied = 0
        while True:
            batch = await c.getmany(timeout_ms=300, max_records=2000)
            if not batch:
                positions = [await c.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    return copied
                continue
            futs = []
            for recs in batch.values():
                for r in recs:
                    futs.append(await p.send(dst, r.value, key=r.key, headers=list(r.headers)))
            await asyncio.gather(*futs)
            copied += len(futs)
    finally:
        await c.stop()
        await p.stop()


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB, stderr) of a process run to its end."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[2:4]} exited with {proc.returncode}:\n{err.decode()[-3000:]}")
    # the process reports its own peak RSS on its last stdout line (RUSAGE_CHILDREN
    # here would be the maximum over every child so far)
    return wall, float(out.decode().split()[-1]), err.decode()


async def run(bootstrap: str, db_url: str) -> None:
    settings = Settings.model_validate(
        {"kafka": {"bootstrap": bootstrap, "linger_ms": 5}, "database": {"url": db_url}}
    )
    stamp = int(time.time())
    dlq_topic, origin = f"bench-dlq-{stamp}.dlq", f"bench-dlq-src-{stamp}"
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics(
            [TopicSpec(name=t, partitions=PARTITIONS) for t in (dlq_topic, origin)]
            + [
                TopicSpec(name=f"{origin}-{kind}{r}", partitions=PARTITIONS)
                for kind in ("raw", "replay")
                for r in range(ROUNDS)
            ]
        )
    t0 = time.perf_counter()
    await fill(settings, dlq_topic, origin, N)
    console.print(
        f"{N:,} dead letters on {PARTITIONS} partitions (filled in "
        f"{time.perf_counter() - t0:.0f}s); {cpu_note()}"
    )
    env = dict(os.environ, EVENTPIPE_KAFKA_BOOTSTRAP=bootstrap, EVENTPIPE_DATABASE_URL=db_url)
    raw: list[tuple[float, float]] = []
    replay: list[tuple[float, float]] = []
    for r in range(ROUNDS):  # interleaved: a slow moment of the machine hits both
        wall, rss, _ = await asyncio.to_thread(
            _timed,
            [sys.executable, "-m", "bench.dlq", "--raw", bootstrap, dlq_topic, f"{origin}-raw{r}"],
            env,
        )
        raw.append((N / wall, rss))
        cmd = [sys.executable, "-m", "bench.dlq", "--replay", dlq_topic, f"{origin}-replay{r}"]
        wall, rss, err = await asyncio.to_thread(_timed, cmd, env)
        if f"replayed {N}" not in " ".join(err.split()):
            raise RuntimeError(f"the replay did not replay {N} records:\n{err[-2000:]}")
        replay.append((N / wall, rss))
    best_raw = max(raw)
    best = max(replay)
    ratio = best[0] / best_raw[0]
    table(
        f"replay of {N:,} dead letters (events/s, process wall time incl. start-up)",
        ["path", "events/s", "ratio", "peak RSS MiB", "target"],
        [
            ["raw aiokafka copy (peer)", f"{best_raw[0]:,.0f}", "1.00x", f"{best_raw[1]:.0f}", "-"],
            [
                "eventpipe dlq replay",
                f"{best[0]:,.0f}",
                f"{ratio:.2f}x",
                f"{best[1]:.0f}",
                f">={TARGET}x raw copy: {'met' if ratio >= TARGET else 'MISSED'}",
            ],
        ],
    )
    console.print(
        f"best of {ROUNDS} interleaved rounds each: raw copy "
        + ", ".join(f"{v:,.0f}" for v, _ in raw)
        + "; replay "
        + ", ".join(f"{v:,.0f}" for v, _ in replay)
        + " events/s"
    )


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _replay_main(argv: list[str]) -> None:
    """``eventpipe dlq replay`` as the CLI runs it, then this process's peak RSS."""
    from eventpipe.cli.main import main as cli

    dlq_topic, target = argv
    code = cli(["dlq", "replay", "--topic", dlq_topic, "--to", target, "--force"])
    sys.stdout.write(f"\n{_peak_rss_mb():.1f}\n")
    sys.exit(code)


def _raw_main(argv: list[str]) -> None:
    from eventpipe import loop

    bootstrap, src, dst = argv
    copied = loop.run(raw_copy(bootstrap, src, dst))
    if copied != N:
        raise SystemExit(f"copied {copied} of {N}")
    sys.stdout.write(f"\n{_peak_rss_mb():.1f}\n")


def main() -> None:
    run_on_stack(run)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--raw"]:
        _raw_main(sys.argv[2:])
    elif sys.argv[1:2] == ["--replay"]:
        _replay_main(sys.argv[2:])
    else:
        main()
