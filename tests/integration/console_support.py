"""Helpers the console's tests share (no tests here): the service's app with the
console on the real broker and database, dead letters to browse, a login."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import to_kafka
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import Publisher
from eventpipe.service.app import build_app
from eventpipe.service.context import ServiceContext
from eventpipe.settings import Settings, TopicSpec
from tests.helpers import ServiceTestServer

ADMIN_TOKEN = "console-admin-token-7c1f9e"
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_settings(
    settings: Settings, *, token: str | None = ADMIN_TOKEN, **console: Any
) -> Settings:
    service = settings.service.model_copy(
        update={
            "admin_token": SecretStr(token) if token else None,
            "console": settings.service.console.model_copy(update=console),
        }
    )
    return settings.model_copy(update={"service": service})


@contextlib.asynccontextmanager
async def console_client(settings: Settings) -> AsyncIterator[TestClient]:
    ctx = await ServiceContext.open(settings, broker_wait_s=5)
    client = TestClient(ServiceTestServer(build_app(ctx), settings.service))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await ctx.close()


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def login(client: TestClient, who: str = "ada", token: str = ADMIN_TOKEN) -> ClientResponse:
    page = await client.get("/console/login", headers=HTML)
    assert page.status == 200
    csrf = csrf_of(await page.text())
    return await client.post(
        "/console/login",
        data={"who": who, "token": token, "csrf": csrf, "next": "/console/dlq"},
        headers=HTML,
        allow_redirects=False,
    )


async def page_csrf(client: TestClient, path: str) -> str:
    r = await client.get(path, headers=HTML)
    assert r.status == 200, (r.status, await r.text())
    return csrf_of(await r.text())


def letter(
    i: int,
    origin_topic: str,
    *,
    pipeline: str,
    stage: str,
    exc: Exception,
    failed_at: datetime | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    **extensions: Any,
) -> DeadLetter:
    ev = CloudEvent.create(
        "t.order",
        "/shop",
        {"n": i, "ok": False},
        id=f"ev-{i}",
        partitionkey=f"k{i}",
        **extensions,
    )
    m = to_kafka(ev)
    d = DeadLetter.from_exception(
        exc,
        key=m.key,
        value=m.value,
        headers=[*m.headers, *(headers or [])],
        pipeline=pipeline,
        stage=stage,
        origin=Origin(origin_topic, 0, 100 + i, 1),
        first_failed_at=failed_at,
    )
    if failed_at is not None:
        d.failed_at = failed_at
    return d


@dataclass
class Letters:
    dlq_topic: str
    origin: str
    refs: dict[str, str]  # event id -> ref


async def write_letters(settings: Settings, origin: str, letters: list[DeadLetter]) -> Letters:
    """``letters`` on a new dead-letter topic ``<origin>.dlq`` (one partition)."""
    dlq_topic = f"{origin}.dlq"
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=dlq_topic, partitions=1)])
    async with Publisher(settings) as pub:
        acks = await DeadLetterWriter(pub, dlq_topic).write(letters)
    refs = {}
    for d, ack in zip(letters, acks, strict=True):
        ev_id = dict(d.headers)["ce_id"].decode()
        refs[ev_id] = f"{dlq_topic}:{ack.partition}:{ack.offset}"
    return Letters(dlq_topic, origin, refs)
