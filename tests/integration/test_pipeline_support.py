"""Helpers the pipeline integration tests share (no tests here)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import yaml

from eventpipe.context import Context
from eventpipe.db.pool import open_pool
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.pipelines.runtime import PipelineRuntime
from eventpipe.pipelines.spec import PipelineSpec
from eventpipe.plugin import Component
from eventpipe.publisher import Publisher
from eventpipe.service.catalog import CATALOG
from eventpipe.service.runner import Role, Service
from eventpipe.settings import Settings
from eventpipe.status import ComponentStatus

ROOT = Path(__file__).resolve().parents[2]


def ident(prefix: str = "p") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def with_pipelines(settings: Settings, *pipelines: dict[str, Any]) -> Settings:
    """Settings holding ``pipelines``, validated like a config file would be."""
    from eventpipe.pipelines.spec import parse_pipelines

    s = settings.model_copy(update={"pipelines": list(pipelines)})
    parse_pipelines(s.pipelines, CATALOG.sinks)
    return s


@contextlib.asynccontextmanager
async def running(settings: Settings, role: Role = "pipelines") -> AsyncIterator[Service]:
    svc = Service(settings, role)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


@contextlib.asynccontextmanager
async def runtime(
    settings: Settings, spec: dict[str, Any]
) -> AsyncIterator[tuple[PipelineRuntime, Publisher]]:
    """One pipeline's runtime in this process (started; stopped on exit), and a
    publisher to feed it: for tests that reach into the reader or the processor."""
    pool = await open_pool(settings.database)
    try:
        async with Publisher(settings) as pub, TopicAdmin(settings.kafka) as admin:
            rt = PipelineRuntime(
                PipelineSpec.model_validate(spec), Context(settings, pub, admin, pool, CATALOG)
            )
            try:
                await rt.start()
                yield rt, pub
            finally:
                await rt.stop()
    finally:
        await pool.close()


async def status_when(
    comp: Component, ready: Callable[[ComponentStatus], bool], within_s: float = 20
) -> ComponentStatus:
    """The component's status once ``ready`` holds for it (the last one read, else)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    st = comp.status()
    while not ready(st) and loop.time() < deadline:
        await asyncio.sleep(0.2)
        st = comp.status()
    return st


async def sql(url: str, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query.encode(), params)
        return await cur.fetchall() if cur.description else []


async def wait_rows(url: str, query: str, expected: int, timeout: float = 30.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    n = -1
    while loop.time() < deadline:
        n = int((await sql(url, query))[0][0])
        if n >= expected:
            return n
        await asyncio.sleep(0.2)
    return n


async def recreate_topic(settings: Settings, topic: str, partitions: int = 1) -> None:
    """Delete ``topic`` and create it again under its name (a new incarnation)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from eventpipe.settings import TopicSpec

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    async with TopicAdmin(settings.kafka) as ta:
        for _ in range(50):
            if topic not in await ta.list_topics():
                break
            await asyncio.sleep(0.1)
        await ta.ensure_topics([TopicSpec(name=topic, partitions=partitions)])


async def produce_raw(settings: Settings, topic: str, messages: list[KafkaMessage]) -> None:
    async with Publisher(settings) as p:
        await p.publish_messages(topic, messages, [str(i) for i in range(len(messages))])


def dlq_headers(record: Any) -> dict[str, str]:
    return {
        k: v.decode()
        for k, v in record.headers
        if k.startswith("eventpipe.dlq.") and not k.endswith("stacktrace")
    }


def write_config(
    path: Path, settings: Settings, pipelines: list[dict[str, Any]], *, log_level: str = "WARNING"
) -> Path:
    cfg = {
        "service": {"log_level": log_level, "port": 0},
        "database": {"pool_max": 4},
        "pipelines": pipelines,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_worker(cfg: Path, settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value(),
        PYTHONPATH=str(ROOT),
    )
    out = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "eventpipe", "run", "-c", str(cfg), "--role", "pipelines"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(cfg.parent),
        )
    finally:
        out.close()


def kill9(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill9(proc)
