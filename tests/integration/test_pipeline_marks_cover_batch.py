"""Every record of a batch advances the exactly-once sinks' marks: delivered,
filtered or dead-lettered.  Poison records after a partition's last delivered
record are dead-lettered once, not again after a restart (the reader starts at
the lowest mark + 1)."""

from __future__ import annotations

from typing import Any

import pytest

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings, TopicSpec
from tests.helpers import read_records
from tests.integration.test_pipeline_support import (
    ident,
    running,
    sql,
    wait_rows,
    with_pipelines,
)


def good(name: str, i: int, total: int = 10) -> KafkaMessage:
    ev = CloudEvent.create("t", "/t", {"id": f"r-{i}", "total": total}, id=f"{name}-{i}")
    return to_kafka(ev)


POISON = KafkaMessage(None, b"\xff not a cloudevent", [])


@pytest.mark.parametrize("sink", ["postgres", "topic"])
async def test_poison_records_at_the_end_of_a_partition_are_dead_lettered_once(
    settings: Settings, sink: str
) -> None:
    name = ident("tail")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (id text primary key, total int not null)")
    sinks: dict[str, Any] = {
        "postgres": {
            "postgres": {"table": name, "columns": {"id": ".data.id", "total": ".data.total"}}
        },
        "topic": {"topic": {"topic": f"{name}.out"}},
    }
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "steps": [{"filter": ".data.total > 0"}],
        "sinks": [sinks[sink]],
    }
    s = with_pipelines(settings, pipeline)
    # 5 delivered and 1 filtered, then 2 poison records after them in the same batch;
    # then a batch of poison records only.
    first = [good(name, i) for i in range(5)] + [good(name, 5, total=0), POISON, POISON]
    async with TopicAdmin(s.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=name, partitions=1)])
    out = f"select count(*) from {name}" if sink == "postgres" else None
    async with running(s), Publisher(s) as pub:
        await pub.publish_messages(name, first, [str(i) for i in range(len(first))])
        letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 2, timeout=30)
        assert len(letters) == 2
        await pub.publish_messages(name, [POISON, POISON], ["8", "9"])
        letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 4, timeout=30)
        assert len(letters) == 4
        if out is not None:
            assert await wait_rows(url, out, 5) == 5
    # Restarted: the records after the last delivered one are not read again; a new
    # record shows the pipeline went past them.
    async with running(s):
        async with Publisher(s) as pub:
            await pub.publish_messages(name, [good(name, 10)], ["10"])
        if out is not None:
            assert await wait_rows(url, out, 6) == 6
        else:
            assert len(await read_records(s.kafka.bootstrap, f"{name}.out", 6, timeout=30)) == 6
        letters = await read_records(s.kafka.bootstrap, f"{name}.dlq", 5, timeout=5)
    assert len(letters) == 4, f"{len(letters)} dead letters for 4 poison records"
    if sink == "postgres":
        marks = await sql(
            url,
            'select "offset" from eventpipe.sink_offsets where sink = %s and topic = %s',
            [f"{name}/postgres", name],
        )
        assert marks == [(10,)]
