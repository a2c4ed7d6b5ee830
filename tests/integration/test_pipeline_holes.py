"""A hole in what the consumer hands the pipeline -- records lost between two
fetches, as faust's channel queue lost them in a rebalance -- is never marked past:
the pipeline seeks back and reads them again, so Postgres holds every event once."""

from __future__ import annotations

from typing import Any

import pytest

from eventpipe.envelope import CloudEvent
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.pipelines import faust_adapter
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings, TopicSpec
from tests.integration.test_pipeline_support import (
    ident,
    running,
    sql,
    wait_rows,
    with_pipelines,
)

N = 300
LOST_FROM = 5  # the first fetch that holds this offset loses it and everything after


async def test_records_lost_between_fetches_are_read_again_not_skipped(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = ident("holes")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (event_id text not null)")
    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=name, partitions=1)])
    async with Publisher(settings) as pub:
        await pub.publish_batch(
            name, [CloudEvent.create("t", "/holes", {"i": i}, id=f"h{i}") for i in range(N)]
        )

    fetch = faust_adapter.fetch
    seen: list[int] = []  # how often LOST_FROM came back from the consumer

    async def lossy_fetch(consumer: Any, tps: Any, wait_s: float, *args: Any) -> Any:
        got = await fetch(consumer, tps, wait_s, *args)
        for tp, recs in list(got.items()):
            if any(r.offset == LOST_FROM for r in recs):
                seen.append(LOST_FROM)
                if len(seen) == 1:  # the consumer moved past them; they never arrive
                    got[tp] = [r for r in recs if r.offset < LOST_FROM]
        return got

    monkeypatch.setattr(faust_adapter, "fetch", lossy_fetch)
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "steps": [{"jq": "{i}"}],
        "sinks": [{"postgres": {"table": name, "columns": {"event_id": ".id"}}}],
        "state": {"dedup_window": 0},
        "batch": {"max_records": 50, "within": "10ms"},
    }
    async with running(with_pipelines(settings, pipeline)):
        assert await wait_rows(url, f"select count(*) from {name}", N, timeout=60) == N
    total, distinct = (await sql(url, f"select count(*), count(distinct event_id) from {name}"))[0]
    assert (total, distinct) == (N, N)
    assert len(seen) >= 2  # the lost records were fetched again
    marks = await sql(url, 'select "offset" from eventpipe.sink_offsets where topic = %s', [name])
    assert marks == [(N - 1,)]
