"""The broker stops mid-test (a broker of the test's own: killed, or frozen with
SIGSTOP and resumed): no 2xx without a stored event; with ``spool: postgres``, 202
and every spooled event delivered, in order, once the broker is back."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventpipe.embedded.broker import EmbeddedBroker
from eventpipe.envelope.kafka import from_kafka
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.test_webhook_source import close_hook, open_hook, standard_headers


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(Path(tempfile.mkdtemp(prefix="ep-wh-broker-")), 0)
    b.start()
    try:
        yield b
    finally:
        if b.child is not None and b.child.proc.poll() is None:
            resume(b)  # a stopped process does not act on SIGTERM
        b.stop()


def pause(broker: EmbeddedBroker) -> None:
    """Freeze the broker (SIGSTOP): connections stay open, nothing is answered."""
    assert broker.child is not None
    os.kill(broker.child.proc.pid, signal.SIGSTOP)


def resume(broker: EmbeddedBroker) -> None:
    assert broker.child is not None
    os.kill(broker.child.proc.pid, signal.SIGCONT)


def outage_settings(settings: Settings, broker: EmbeddedBroker) -> Settings:
    kafka = settings.kafka.model_copy(
        update={
            "bootstrap": broker.bootstrap,
            "request_timeout_ms": 2000,
            "metadata_max_age_ms": 1000,
        }
    )
    service = settings.service.model_copy(update={"publish_timeout_s": 3})
    return settings.model_copy(update={"kafka": kafka, "service": service})


def body(i: int) -> bytes:
    return orjson.dumps({"type": "order.placed", "data": {"seq": i}})


async def post(hook: Any, i: int, prefix: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    b = body(i)
    r = await hook.client.post(hook.path, data=b, headers=standard_headers(b, f"{prefix}-{i}"))
    return r.status, await r.json(), dict(r.headers)


async def test_broker_down_without_spool_is_503_never_2xx(
    settings: Settings, broker: EmbeddedBroker
):
    s = outage_settings(settings, broker)
    topic = f"outage-{uuid.uuid4().hex[:8]}"
    hook = await open_hook(s, topic, publish_timeout_s=1.5)
    try:
        assert (await post(hook, 0, "up"))[0] == 200
        broker.stop()
        for i in range(3):
            status, problem, headers = await post(hook, i + 1, "down")
            assert status == 503, problem
            assert problem["type"].endswith("broker-unavailable")
            assert int(headers["Retry-After"]) >= 1
    finally:
        await close_hook(hook)


async def test_spool_answers_202_and_relays_in_order_after_the_broker_returns(
    settings: Settings, broker: EmbeddedBroker
):
    s = outage_settings(settings, broker)
    topic = f"spool-{uuid.uuid4().hex[:8]}"
    hook = await open_hook(
        s, topic, spool="postgres", publish_timeout_s=1.5, event={"partitionkey": '"one-key"'}
    )  # one partition: total order
    prefix = uuid.uuid4().hex[:8]
    try:
        assert (await post(hook, 0, prefix))[0] == 200
        pause(broker)
        statuses = [(await post(hook, i, prefix))[:2] for i in range(1, 6)]
        assert all(st == 202 and ans["status"] == "spooled" for st, ans in statuses), statuses
        # a redelivery of a spooled one is a duplicate, not a second row
        assert (await post(hook, 3, prefix))[1]["status"] == "duplicate"
        # status(): spooling, the five rows waiting, and why
        for _ in range(60):
            st = hook.source.status()
            if st.details["spool_depth"] == 5:
                break
            await asyncio.sleep(0.25)
        assert st.details["spooling"] is True and st.details["spool_depth"] == 5
        assert st.last_error is not None
        assert st.last_error.error_class.endswith("BrokerUnavailableError")
        resume(broker)
        deadline = asyncio.get_running_loop().time() + 60
        while hook.ctx.pool is not None:
            async with hook.ctx.pool.connection() as conn:
                cur = await conn.execute(
                    "select count(*) from eventpipe.webhook_spool where source = %s", (hook.name,)
                )
                row = await cur.fetchone()
            if row and row[0] == 0:
                break
            assert asyncio.get_running_loop().time() < deadline, "spool not relayed"
            await asyncio.sleep(0.3)
        # once the spool is empty, requests go to the broker directly again
        for _ in range(100):
            status, answer, _ = await post(hook, 6, prefix)
            if answer["status"] != "spooled":
                break
            await asyncio.sleep(0.2)
        assert status == 200 and answer["status"] == "stored"
        records = await read_records(s.kafka.bootstrap, topic, 7, timeout=30)
        events = [(r.partition, from_kafka(r.key, r.value, list(r.headers))) for r in records]
        # every spooled event and the direct one arrived, with the ids given at receipt
        ids = [e.id for _, e in events]
        assert set(ids) == {f"{prefix}-{i}" for i in range(7)}
        assert len({p for p, _ in events}) == 1  # one key, one partition
        # the only possible extra copy is the write that timed out while the broker was
        # frozen (the producer delivers it on resume): same id, at least once
        extra = [i for i in ids if ids.count(i) > 1]
        assert set(extra) <= {f"{prefix}-1"}
        # in order: the spool relayed oldest first, then the direct write
        first_seen = list(dict.fromkeys(e.data["data"]["seq"] for _, e in events))
        assert first_seen == [0, 1, 2, 3, 4, 5, 6]
    finally:
        await close_hook(hook)


async def test_a_late_acknowledgement_records_the_delivery_id(
    settings: Settings, broker: EmbeddedBroker
):
    """A 503 after the publish timeout is not "nothing stored": the frozen broker
    stores those writes once it is back, and a provider's retry of one of them is
    then answered as a duplicate (here and on another instance), not stored twice."""
    s = outage_settings(settings, broker)
    # aiokafka waits for the frozen broker instead of failing the batch itself
    s = s.model_copy(update={"kafka": s.kafka.model_copy(update={"request_timeout_ms": 60_000})})
    topic = f"late-{uuid.uuid4().hex[:8]}"
    hook = await open_hook(s, topic, publish_timeout_s=1.5)
    prefix = uuid.uuid4().hex[:8]
    try:
        assert (await post(hook, 0, prefix))[0] == 200
        pause(broker)
        try:
            answers = await asyncio.gather(*(post(hook, i, prefix) for i in range(1, 6)))
        finally:
            resume(broker)
        for status, problem, headers in answers:
            assert status == 503, problem
            assert problem["type"].endswith("broker-unavailable")
            assert problem["stored"] == "unknown"
            assert "may still be stored" in problem["detail"]
            assert "same delivery id" in problem["detail"]
            assert int(headers["Retry-After"]) >= 1
        records = await read_records(s.kafka.bootstrap, topic, 6, timeout=30)
        assert {from_kafka(r.key, r.value, list(r.headers)).id for r in records} == {
            f"{prefix}-{i}" for i in range(6)
        }
        # the producer hears the broker's late answer and records the ids
        late = f'eventpipe_webhook_late_acks_total{{source="{hook.name}"}} 5.0'
        deadline = asyncio.get_running_loop().time() + 30
        while late not in await (await hook.client.get("/metrics")).text():
            assert asyncio.get_running_loop().time() < deadline, "no late acknowledgement"
            await asyncio.sleep(0.2)
        for i in range(1, 6):
            status, answer, _ = await post(hook, i, prefix)
            assert (status, answer["status"]) == (200, "duplicate"), answer
        await asyncio.sleep(0.5)  # the ids reach Postgres with the next flush
        twin = await open_hook(s, topic, name=hook.name, publish_timeout_s=1.5)
        try:
            for i in range(1, 6):
                status, answer, _ = await post(twin, i, prefix)
                assert (status, answer["status"]) == (200, "duplicate"), answer
        finally:
            await close_hook(twin)
        assert len(await read_records(s.kafka.bootstrap, topic, 6, timeout=5)) == 6
    finally:
        await close_hook(hook)
