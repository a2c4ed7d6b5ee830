"""A source partition that has lag but does not move is reported: the consumer lag
gauge shows it, and a warning names the partition and what the reader knows; a
partition paused by a sink is reported once per stall, not at every report."""

from __future__ import annotations

import asyncio
import logging

import pytest
from faust.types import TP
from prometheus_client import REGISTRY

from eventpipe.envelope import CloudEvent
from eventpipe.pipelines import runtime as runtime_module
from eventpipe.settings import Settings
from tests.integration.test_pipeline_support import ident, runtime


async def test_a_partition_with_lag_that_does_not_move_is_reported(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime_module, "LAG_REPORT_S", 0.3)
    caplog.set_level(logging.WARNING, logger="eventpipe.pipelines")
    name = ident("stall")
    spec = {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "sinks": [{"topic": {"topic": f"{name}-out"}}],
    }
    async with runtime(settings, spec) as (rt, pub):
        assert rt.reader is not None
        rt.reader.pause({TP(name, 0)})  # as an open circuit breaker would
        await pub.publish_batch(
            name, [CloudEvent.create("t", "/stall", {"i": i}, id=f"e{i}") for i in range(5)]
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            if any("has not moved" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(4 * 0.3)  # four more reports of the same stall

    stalled = [r.getMessage() for r in caplog.records if "has not moved" in r.getMessage()]
    assert stalled, "no stall warning"
    assert len(stalled) == 1, stalled
    assert f"{name}[0] has lag 5 and has not moved from offset 0" in stalled[0]
    assert "paused by a sink: True" in stalled[0]
    lag = REGISTRY.get_sample_value(
        "eventpipe_pipeline_consumer_lag",
        {"pipeline": name, "topic": name, "partition": "0"},
    )
    assert lag == 5
