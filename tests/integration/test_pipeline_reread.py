"""Records taken from the consumer's buffer that never reached the processor are
read again: a partition with lag that does not move is sought back to the next
offset to process.  (`test_pipeline_aggregate` once stalled at offset 10 of a
partition with lag 10: faust's own fetcher had drained the records, see
`faust_adapter.SourceConsumer._getmany`, and no later record arrived to reveal the hole.)
Here the records are taken out of aiokafka's buffer behind the reader's back."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from faust.types import TP

from eventpipe.envelope import CloudEvent
from eventpipe.pipelines import faust_adapter
from eventpipe.pipelines import runtime as runtime_module
from eventpipe.settings import Settings
from tests.helpers import read_events
from tests.integration.test_pipeline_support import ident, runtime


async def _steal(consumer: Any, tp: TopicPartition, n: int) -> list[int]:
    """Take ``n`` buffered records of ``tp`` as a fetch would, and drop them."""
    taken: list[int] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(taken) < n and loop.time() < deadline:
        got = await faust_adapter.fetch(consumer, frozenset({tp}), 0.5, n - len(taken))
        taken.extend(r.offset for r in got.get(tp, []))
    return taken


async def test_records_drained_but_not_processed_are_read_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime_module, "LAG_REPORT_S", 0.3)
    caplog.set_level(logging.WARNING, logger="eventpipe.pipelines")
    name = ident("reread")
    tp = TP(name, 0)
    events = [CloudEvent.create("t", "/reread", {"i": i}, id=f"e{i}") for i in range(10)]
    spec = {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "sinks": [{"topic": {"topic": f"{name}-out"}}],
    }
    async with runtime(settings, spec) as (rt, pub):
        reader = rt.reader
        assert reader is not None
        await pub.publish_batch(name, events[:5])
        assert len(await read_events(settings.kafka.bootstrap, f"{name}-out", 5)) == 5
        reader.pause({tp})  # the reader leaves the partition alone meanwhile...
        # ...once the fetch it may have waiting (at most 1 s) has returned
        await asyncio.sleep(2.0)
        await pub.publish_batch(name, events[5:])
        taken = await reader._call(_steal, TopicPartition(name, 0), 5)
        assert taken == [5, 6, 7, 8, 9]
        reader.resume({tp})
        out = await read_events(settings.kafka.bootstrap, f"{name}-out", 10, timeout=30)

    assert sorted(e.id for e in out) == sorted(e.id for e in events)
    assert reader.rereads >= 1
    again = [r.getMessage() for r in caplog.records if "reading it again" in r.getMessage()]
    assert again and again[0] == (
        f"partition {name}[0]: stalled at offset 5 (the consumer stood at 10); "
        "reading it again from 5"
    )
