"""A backfill job resumed after its topic was deleted and created again: its
progress (the next offset per partition) belongs to the old topic.  By default
the resume stops with an error naming the topic, partition, offset, end offset
and the option; with ``kafka.on_topic_reset: reset`` the partition is planned
again and the new topic's records in the range are read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from eventpipe.backfill.job import Job, JobStore, Progress, new_job_id
from eventpipe.db.pool import open_pool
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.kafka.incarnation import TopicResetError
from eventpipe.settings import Settings
from tests.integration.test_backfill_support import (
    backfill,
    event,
    make_topic,
    now_ms,
    produce_at,
)
from tests.integration.test_pipeline_support import ident, recreate_topic, sql, with_pipelines

HOUR_MS = 3_600_000


def pipeline(name: str) -> dict[str, object]:
    return {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "sinks": [{"topic": {"topic": f"{name}.out"}}],
    }


async def interrupted_job_then_recreate(settings: Settings, name: str, *, keep_id: bool) -> str:
    """A dry-run job over 6 records that stopped at offset 4 of partition 0; then the
    topic is created again with 2 records in the range.  ``keep_id``: the job's
    progress holds the first topic's id (else none, as before migration 0010)."""
    t1 = (now_ms() - 3 * HOUR_MS) // 1000 * 1000
    await make_topic(settings, name, partitions=1)
    async with TopicAdmin(settings.kafka) as ta:
        old_id = (await ta.topic_ids([name]))[name] if keep_id else None
    await produce_at(settings, name, [(0, t1 + i * 1000, event(i)) for i in range(6)])
    url = settings.database.url.get_secret_value()
    pool = await open_pool(settings.database)
    try:
        start = datetime.fromtimestamp(t1 / 1000, UTC)
        end = datetime.fromtimestamp((t1 + HOUR_MS) / 1000, UTC)
        job = Job(
            new_job_id(),
            name,
            "dry_run",
            "topic",
            start,
            end,
            end,
            options={"rate": None, "concurrency": 1, "tables": [], "samples": 100},
            partitions=[Progress(name, 0, start_offset=0, next_offset=4, estimate=6)],
        )
        await JobStore(pool, url).create(job)
    finally:
        await pool.close()
    await recreate_topic(settings, name)
    await produce_at(settings, name, [(0, t1 + i * 1000, event(100 + i)) for i in range(2)])
    await sql(
        url,
        "update eventpipe.backfill_progress set topic_id = %s where job_id = %s",
        [old_id, job.id],
    )
    return job.id


@pytest.mark.parametrize("told_by", ["topic id", "end offset"])
async def test_resume_after_the_topic_was_created_again_stops_by_default(
    settings: Settings, told_by: str
) -> None:
    name = ident("bfreset")
    s = with_pipelines(settings, pipeline(name))
    job_id = await interrupted_job_then_recreate(s, name, keep_id=told_by == "topic id")

    with pytest.raises(TopicResetError) as info:
        await backfill(s, pipeline=None, start=None, end=None, resume=job_id)
    text = str(info.value)
    assert f"backfill job {job_id}" in text
    assert f"topic {name} partition 0: mark at offset 3, end offset 2" in text
    assert "on_topic_reset: reset" in text


async def test_resume_with_reset_reads_the_new_topic(settings: Settings) -> None:
    name = ident("bfreset")
    s = with_pipelines(settings, pipeline(name))
    job_id = await interrupted_job_then_recreate(s, name, keep_id=True)

    reset = s.model_copy(update={"kafka": s.kafka.model_copy(update={"on_topic_reset": "reset"})})
    report = await backfill(reset, pipeline=None, start=None, end=None, resume=job_id)
    assert report["status"] == "completed"
    assert report["counts"]["read"] == 2
    ids = {d["event"]["id"] for d in report["samples"]["outputs"]["topic"]}
    assert ids == {"e100", "e101"}
