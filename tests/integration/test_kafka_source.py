"""The Kafka topic source against the real broker: decoding, mapping, dead letters,
and at-least-once across a restart and a kill -9 (same ids every time)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from eventpipe.connectors.kafka_source import KafkaTopicSource
from eventpipe.context import Context
from eventpipe.dlq.record import DeadLetter
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.schema_registry.models import Schema
from eventpipe.schema_registry.registry import SchemaRegistry
from eventpipe.schema_registry.schemas import AvroSchema, parse
from eventpipe.schema_registry.wire import avro_encode, frame
from eventpipe.service.catalog import CATALOG
from eventpipe.service.config import parse_sources
from eventpipe.service.context import open_context
from eventpipe.settings import Settings, TopicSpec
from tests.helpers import read_events, read_records

AVRO = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "kind", "type": "string"},
        {
            "name": "total",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        },
    ],
}


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[Context]:
    c = await open_context(settings, broker_wait_s=5)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def target(settings: Settings, topic: str) -> str:
    name = f"{topic}.out"
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=name, partitions=3), f"{name}.dlq"])
    return name


async def produce(settings: Settings, topic: str, records: list[tuple[Any, ...]]) -> None:
    """(key, value[, headers]) records, sent in order, acknowledged."""
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    await p.start()
    try:
        futs = []
        for rec in records:
            key, value = rec[0], rec[1]
            headers = rec[2] if len(rec) > 2 else None
            futs.append(await p.send(topic, value, key=key, headers=headers))
        await asyncio.gather(*futs)
    finally:
        await p.stop()


def source(
    ctx: Context, foreign: str, target: str, name: str | None = None, **cfg: Any
) -> KafkaTopicSource:
    entry = {
        "type": "kafka",
        "name": name or f"ks-{uuid.uuid4().hex[:8]}",
        "topic": target,
        "read": {"topics": [foreign], "session_timeout_ms": 3000},
        **cfg,
    }
    (config,), problems = parse_sources([entry])
    assert problems == []
    src = CATALOG.sources["kafka"].build(config, config.name, ctx)
    assert isinstance(src, KafkaTopicSource)
    return src


async def test_json_records_mapped_and_undecodable_ones_dead_lettered(
    ctx: Context, settings: Settings, topic: str, target: str
):
    good = [(f"c{i % 4}".encode(), orjson.dumps({"kind": "placed", "n": i})) for i in range(20)]
    bad = [(b"x", b"\xffnot json"), (None, b"{truncated")]
    await produce(settings, topic, good[:10] + bad[:1] + good[10:] + bad[1:])
    src = source(
        ctx, topic, target, event={"type": '"legacy.order." + .value.kind', "subject": ".value.n"}
    )
    await src.start()
    try:
        events = await read_events(settings.kafka.bootstrap, target, 20)
        letters = await read_records(settings.kafka.bootstrap, f"{target}.dlq", 2)
        for _ in range(100):  # the batch's offsets are committed after its writes
            st = src.status()
            if st.total_in == 22 and st.lag and not any(st.lag.values()):
                break
            await asyncio.sleep(0.1)
    finally:
        await src.stop()
    # status(): 22 records read, 20 events out, 2 dead letters, nothing left to read
    assert (st.kind, st.type, st.state, st.total_in, st.total_out) == (
        "source",
        "kafka",
        "running",
        22,
        20,
    )
    assert st.dead_letters == {"decode": 2} and st.rate_in > 0
    assert st.lag and set(st.lag.values()) == {0}
    assert all(k.startswith(f"{topic}[") for k in st.lag)
    assert src.status().state == "stopped"
    assert len(events) == 20
    by_n = {e.data["n"]: e for e in events}
    assert sorted(by_n) == list(range(20))
    e = by_n[5]
    assert e.type == "legacy.order.placed" and e.subject == "5"
    assert e.partitionkey == "c1" and e.source == f"/kafka/{topic}"
    assert e.id == f"{topic}-{e.extensions['kafkapartition']}-{e.extensions['kafkaoffset']}"
    dls = [DeadLetter.from_kafka(r.key, r.value, list(r.headers)) for r in letters]
    assert sorted(d.value for d in dls) == sorted(v for _, v in bad)
    assert {d.stage for d in dls} == {"decode"} and {d.origin.topic for d in dls} == {topic}
    assert all(d.origin.offset is not None for d in dls)
    assert src.position()  # offsets were committed


async def test_ids_from_a_header_or_the_key(
    ctx: Context, settings: Settings, topic: str, target: str
):
    await produce(
        settings,
        topic,
        [(b"k-1", b'{"a":1}', [("event-id", b"E-1")]), (b"k-2", b'{"a":2}', [("other", b"x")])],
    )
    src = source(ctx, topic, target, event={"id": "header:event-id"})
    await src.start()
    try:
        [event] = await read_events(settings.kafka.bootstrap, target, 1)
        [letter] = await read_records(settings.kafka.bootstrap, f"{target}.dlq", 1)
    finally:
        await src.stop()
    assert event.id == "E-1" and event.type == f"kafka.{topic}"
    d = DeadLetter.from_kafka(letter.key, letter.value, list(letter.headers))
    assert d.stage == "source" and d.key == b"k-2" and "event-id" in d.exception_message


async def test_avro_in_the_confluent_wire_format_via_the_registry(
    ctx: Context, settings: Settings, topic: str, target: str
):
    assert ctx.pool is not None
    reg = await SchemaRegistry(ctx.pool).register(
        f"{topic}-value", Schema(orjson.dumps(AVRO).decode(), "AVRO")
    )
    parsed = parse("AVRO", orjson.dumps(AVRO).decode())
    assert isinstance(parsed, AvroSchema)
    from decimal import Decimal

    value = avro_encode(parsed, {"id": "o-1", "kind": "placed", "total": Decimal("12.50")})
    await produce(
        settings,
        topic,
        [
            (b"o-1", frame(reg.id, value)),
            (b"o-2", frame(reg.id + 100000, value)),  # unknown id
            (b"o-3", b"\x07nope"),
        ],
    )  # not the wire format
    src = source(ctx, topic, target, format="avro", event={"id": "key"})
    await src.start()
    try:
        [event] = await read_events(settings.kafka.bootstrap, target, 1)
        letters = await read_records(settings.kafka.bootstrap, f"{target}.dlq", 2)
    finally:
        await src.stop()
    assert event.id == "o-1"
    assert event.data == {"id": "o-1", "kind": "placed", "total": "12.50"}
    assert sorted(r.key for r in letters) == [b"o-2", b"o-3"]


async def test_raw_bytes(ctx: Context, settings: Settings, topic: str, target: str):
    await produce(settings, topic, [(None, b"\x00\x01binary")])
    src = source(ctx, topic, target, format="bytes")
    await src.start()
    try:
        [event] = await read_events(settings.kafka.bootstrap, target, 1)
    finally:
        await src.stop()
    assert event.data == b"\x00\x01binary"
    assert event.datacontenttype == "application/octet-stream"


def _expected(topic: str, n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [
        (f"k{i % 7}".encode(), orjson.dumps({"n": i, "topic": topic}))
        for i in range(start, start + n)
    ]


async def _wait_ids(settings: Settings, target: str, n: int, timeout: float = 60) -> list[Any]:
    events = await read_events(settings.kafka.bootstrap, target, n, timeout=timeout)
    return events


async def test_restart_delivers_every_record_with_the_same_ids(
    ctx: Context, settings: Settings, topic: str, target: str
):
    name = f"ks-{uuid.uuid4().hex[:8]}"
    await produce(settings, topic, _expected(topic, 300))
    first = source(ctx, topic, target, name=name, batch_size=50)
    await first.start()
    for _ in range(200):
        if sum(1 for _ in first.position()):
            break
        await asyncio.sleep(0.05)
    await first.stop()  # mid-stream: some batches committed, maybe not all
    await produce(settings, topic, _expected(topic, 200, start=300))
    second = source(ctx, topic, target, name=name, batch_size=50)
    await second.start()
    try:
        events = await _wait_ids(settings, target, 500)
    finally:
        await second.stop()
    by_id: dict[str, Any] = {}
    for e in events:
        # a record delivered twice carries the same id and the same data
        assert by_id.setdefault(e.id, e.data) == e.data
    assert sorted(d["n"] for d in by_id.values()) == list(range(500))


async def _first_records(settings: Settings, topic: str, n: int, timeout: float = 60) -> bool:
    """True as soon as ``topic`` holds ``n`` records (no settling: for a kill mid-stream)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        seen = 0
        deadline = asyncio.get_running_loop().time() + timeout
        while seen < n and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=20)
            seen += sum(len(v) for v in batch.values())
        return seen >= n
    finally:
        await consumer.stop()


CRASH_CONFIG = """
service: {{port: 0, log_level: WARNING}}
kafka: {{linger_ms: 1}}
sources:
  - type: kafka
    name: {name}
    topic: {target}
    read: {{topics: [{topic}], session_timeout_ms: 3000}}
    batch_size: 100
"""


def _start(cfg: Path, settings: Settings) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value(),
    )
    with open(cfg.with_suffix(".log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "eventpipe", "run", "-c", str(cfg), "--role", "ingest"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def test_kill_9_mid_stream_then_restart_delivers_everything(
    settings: Settings, topic: str, target: str
):
    n = 20_000
    await produce(settings, topic, _expected(topic, n))
    cfg = Path(tempfile.mkdtemp(prefix="ep-ks-")) / "c.yaml"
    cfg.write_text(
        CRASH_CONFIG.format(name=f"crash-{uuid.uuid4().hex[:6]}", target=target, topic=topic)
    )
    proc = _start(cfg, settings)
    try:
        assert await _first_records(settings, target, 200), cfg.with_suffix(".log").read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = len(await read_records(settings.kafka.bootstrap, target, 0))
        assert 200 <= at_kill < n  # really mid-stream
        proc = _start(cfg, settings)
        events = await _wait_ids(settings, target, n)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    by_id: dict[str, Any] = {}
    for e in events:
        assert by_id.setdefault(e.id, e.data) == e.data
    assert sorted(d["n"] for d in by_id.values()) == list(range(n))
