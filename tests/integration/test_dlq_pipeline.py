"""Dead letters end to end through a running pipeline: a schema-invalid event is
dead-lettered, ``eventpipe dlq replay --patch`` fixes it so it lands in the Postgres
sink exactly once, and replaying again (even forced) adds nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from eventpipe.envelope import CloudEvent
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.test_pipeline_support import (
    ROOT,
    dlq_headers,
    ident,
    running,
    sql,
    wait_rows,
    with_pipelines,
    write_config,
)


def order(i: int, key: str, **data: object) -> CloudEvent:
    body = {"order_id": f"o-{i}", "total": i, **data}
    return CloudEvent.create("shop.order", "/shop", body, id=f"evt-{i}", partitionkey=key)


async def eventpipe(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(
        os.environ,
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value(),
        PYTHONPATH=str(ROOT),
    )
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "eventpipe", *args],
        env=env,
        capture_output=True,
        timeout=60,
    )


async def test_patched_replay_lands_in_postgres_exactly_once(
    settings: Settings, tmp_path: Path
) -> None:
    name = ident("dlqe2e")
    url = settings.database.url.get_secret_value()
    # no unique constraint: a second delivery would be a second row
    await sql(url, f"create table {name} (event_id text not null, id text, total numeric)")
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 3},
        "validate_input": {
            "schema": {
                "type": "object",
                "required": ["order_id", "total"],
                "properties": {"total": {"type": "number"}},
            }
        },
        "steps": [{"jq": "{id: .order_id, total}"}],
        "sinks": [
            {
                "postgres": {
                    "table": name,
                    "columns": {"event_id": ".id", "id": ".data.id", "total": ".data.total"},
                }
            }
        ],
    }
    s = with_pipelines(settings, pipeline)
    cfg = write_config(tmp_path / "eventpipe.yaml", settings, [pipeline])
    count = f"select count(*) from {name}"
    bad = order(100, "k-bad", total="twelve")  # a string: schema-invalid

    async def sentinel(i: int) -> None:
        """An event on the bad one's partition: once it is in, so is what came before."""
        async with Publisher(s) as pub:
            await pub.publish(name, order(i, "k-bad"))

    async with running(s):
        async with Publisher(s) as pub:
            await pub.publish_batch(name, [order(i, f"k{i}") for i in range(5)])
            await pub.publish(name, bad)
        assert await wait_rows(url, count, 5) == 5
        letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 1, timeout=30)
        assert len(letters) == 1
        h = dlq_headers(letters[0])
        assert h["eventpipe.dlq.stage"] == "validate"
        assert h["eventpipe.dlq.exception.class"].endswith("SchemaValidationError")
        assert h["eventpipe.dlq.topic"] == name

        r = await eventpipe(
            s, "dlq", "replay", "-c", str(cfg), "--pipeline", name, "--patch", ".data.total = 12"
        )
        assert r.returncode == 0, r.stderr.decode()
        assert "replayed 1," in r.stderr.decode()
        await sentinel(200)
        assert await wait_rows(url, count, 7) == 7
        fixed = await sql(url, f"select total from {name} where event_id = 'evt-100'")
        assert fixed == [(12,)]

        # again: recorded as replayed, so nothing is re-produced
        r = await eventpipe(
            s, "dlq", "replay", "-c", str(cfg), "--pipeline", name, "--patch", ".data.total = 12"
        )
        assert r.returncode == 0, r.stderr.decode()
        assert "replayed 0, skipped 1 already replayed" in r.stderr.decode()
        # forced: re-produced with the same id, and the pipeline's dedup drops it
        r = await eventpipe(
            s,
            "dlq",
            "replay",
            "-c",
            str(cfg),
            "--pipeline",
            name,
            "--patch",
            ".data.total = 12",
            "--force",
        )
        assert r.returncode == 0 and "replayed 1," in r.stderr.decode(), r.stderr.decode()
        await sentinel(201)
        assert await wait_rows(url, count, 8) == 8

    rows = await sql(url, f"select event_id, count(*) from {name} group by 1 order by 1")
    assert dict(rows) == {
        **{f"evt-{i}": 1 for i in range(5)},
        "evt-100": 1,
        "evt-200": 1,
        "evt-201": 1,
    }
