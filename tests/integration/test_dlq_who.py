"""Replays and discards record who did them and why, from every door: the CLI
(``--by``, default the OS user; ``--reason``) and the admin API (``by``,
``reason``); the console's own are in test_console_dlq.py."""

from __future__ import annotations

import asyncio
import getpass
import os
import subprocess
import sys

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from eventpipe.service.app import build_app
from eventpipe.service.context import open_context
from eventpipe.settings import Settings
from tests.helpers import ServiceTestServer
from tests.integration.console_support import ADMIN_TOKEN, console_settings
from tests.integration.dlq_support import Letters, letter, write_letters


async def _rows(settings: Settings, query: str, dlq_topic: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(
        settings.database.url.get_secret_value()
    ) as conn:
        cur = await conn.execute(query.encode(), (dlq_topic,))
        return list(await cur.fetchall())


REPLAYS = "select event_id, who, reason from eventpipe.dlq_replays where dlq_topic = %s order by 1"
DISCARDS = (
    "select event_id, who, reason from eventpipe.dlq_discards where dlq_topic = %s order by 1"
)


async def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(
        os.environ,
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value(),
    )
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "eventpipe", "dlq", *args],
        env=env,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
async def letters(settings: Settings, topic: str) -> Letters:
    return await write_letters(
        settings,
        topic,
        [letter(i, topic, pipeline="who", stage="sink", exc=ValueError("x")) for i in range(3)],
    )


async def test_cli_records_by_and_reason(settings: Settings, letters: Letters) -> None:
    t = letters.dlq_topic
    r = await _cli(
        settings, "replay", "--topic", t, "--where", '.event_id == "ev-0"',
        "--reason", "sink was down", "--by", "margaret",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    r = await _cli(settings, "replay", "--topic", t, "--where", '.event_id == "ev-1"')
    assert r.returncode == 0, r.stderr.decode()  # both optional: as before
    assert await _rows(settings, REPLAYS, t) == [
        ("ev-0", "margaret", "sink was down"),
        ("ev-1", getpass.getuser(), None),
    ]
    r = await _cli(
        settings, "discard", "--topic", t, "--where", '.event_id == "ev-2"', "--reason", "test data"
    )
    assert r.returncode == 0, r.stderr.decode()
    assert await _rows(settings, DISCARDS, t) == [("ev-2", getpass.getuser(), "test data")]


async def test_admin_api_records_by_and_reason(settings: Settings, letters: Letters) -> None:
    t = letters.dlq_topic
    s = console_settings(settings)
    ctx = await open_context(s, broker_wait_s=5)
    client = TestClient(ServiceTestServer(build_app(ctx), s.service))
    await client.start_server()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        r = await client.post(
            "/v1/dlq/replay",
            headers=auth,
            json={"topic": t, "where": '.event_id == "ev-0"', "by": "ops-bot", "reason": "retry"},
        )
        assert r.status == 200 and (await r.json())["replayed"] == 1
        r = await client.post(
            "/v1/dlq/replay", headers=auth, json={"topic": t, "where": '.event_id == "ev-1"'}
        )
        assert r.status == 200
        r = await client.post(
            "/v1/dlq/replay", headers=auth, json={"topic": t, "by": 7, "reason": "x"}
        )
        assert r.status == 400 and (await r.json())["errors"][0]["field"] == "by"
        r = await client.post(
            "/v1/dlq/discard",
            headers=auth,
            json={"topic": t, "where": '.event_id == "ev-2"', "reason": "junk", "by": "ops-bot"},
        )
        assert r.status == 200 and (await r.json())["discarded"] == 1
    finally:
        await client.close()
        await ctx.close()
    assert await _rows(settings, REPLAYS, t) == [
        ("ev-0", "ops-bot", "retry"),
        ("ev-1", "admin-api", None),
    ]
    assert await _rows(settings, DISCARDS, t) == [("ev-2", "ops-bot", "junk")]
