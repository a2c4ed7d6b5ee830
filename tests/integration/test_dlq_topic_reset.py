"""The DLQ replay and discard ledgers are keyed by (dlq topic, partition, offset).
A dead-letter topic deleted and created again has new dead letters at the same
offsets: they are never taken for the ones replayed or discarded before.  By
default the operation stops with an error naming the topic, partition, ledger
mark, end offset and the option; with ``kafka.on_topic_reset: reset`` the old
rows are let go and the new dead letters are replayed and listed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventpipe.db.pool import open_pool
from eventpipe.dlq.ops import Dlq
from eventpipe.dlq.query import Filters
from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import to_kafka
from eventpipe.errors import InvalidEventError
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.kafka.incarnation import TopicResetError
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings, TopicSpec
from tests.helpers import read_records
from tests.integration.test_pipeline_support import ident, recreate_topic, sql


def letters(origin: str, gen: str, n: int) -> list[DeadLetter]:
    out = []
    for i in range(n):
        m = to_kafka(CloudEvent.create("t", "/t", {"n": i}, id=f"{gen}-{i}"))
        out.append(
            DeadLetter.from_exception(
                InvalidEventError("data.n", "bad"),
                key=None,
                value=m.value,
                headers=m.headers,
                pipeline="p",
                stage="validate",
                origin=Origin(origin, 0, i, 1),
            )
        )
    return out


@pytest.fixture
async def reborn(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """A DLQ topic whose 3 dead letters were replayed (and one discarded); then the
        topic is created again and gets 2 new dead letters at offsets 0..1 (below the
    ledger's highest offset, which a ledger row without a topic id needs to tell)."""
    origin = ident("orig")
    dlq_topic = f"{origin}.dlq"
    async with TopicAdmin(settings.kafka) as ta:
        await ta.ensure_topics([TopicSpec(name=t, partitions=1) for t in (origin, dlq_topic)])
    async with Publisher(settings) as pub:
        await DeadLetterWriter(pub, dlq_topic).write(letters(origin, "old", 3))
    pool = await open_pool(settings.database)
    try:
        dlq = Dlq(settings, pool)
        entries = await dlq.select([dlq_topic], Filters())
        report = await dlq.replay([dlq_topic], entries)
        assert report.replayed == 3
        assert await dlq.discard(entries[2:], "seen it") == 1
    finally:
        await pool.close()
    await recreate_topic(settings, dlq_topic)
    async with Publisher(settings) as pub:
        await DeadLetterWriter(pub, dlq_topic).write(letters(origin, "new", 2))
    yield origin, dlq_topic


@pytest.mark.parametrize("old_rows", ["with topic id", "without topic id"])
async def test_the_ledger_of_a_recreated_dlq_topic_stops_replay_by_default(
    settings: Settings, reborn: tuple[str, str], old_rows: str
) -> None:
    origin, dlq_topic = reborn
    url = settings.database.url.get_secret_value()
    if old_rows == "without topic id":  # rows written before topic ids were kept
        for table in ("dlq_replays", "dlq_discards"):
            await sql(
                url,
                f"update eventpipe.{table} set topic_id = null where dlq_topic = %s",
                [dlq_topic],
            )
    pool = await open_pool(settings.database)
    try:
        dlq = Dlq(settings, pool)
        with pytest.raises(TopicResetError) as info:
            entries = await dlq.select([dlq_topic], Filters())
            await dlq.replay([dlq_topic], entries)
    finally:
        await pool.close()
    text = str(info.value)
    assert f"topic {dlq_topic} partition 0: mark at offset 2, end offset 2" in text
    assert "on_topic_reset: reset" in text
    # Nothing was replayed: the origin has the 3 first replays only.
    assert len(await read_records(settings.kafka.bootstrap, origin, 4, timeout=3)) == 3


async def test_with_reset_the_new_dead_letters_are_listed_and_replayed(
    settings: Settings, reborn: tuple[str, str]
) -> None:
    origin, dlq_topic = reborn
    s = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"on_topic_reset": "reset"})}
    )
    pool = await open_pool(s.database)
    try:
        dlq = Dlq(s, pool)
        entries = await dlq.select([dlq_topic], Filters())
        assert sorted(e.event_id or "" for e in entries) == ["new-0", "new-1"]
        report = await dlq.replay([dlq_topic], entries)
        assert (report.replayed, report.skipped_replayed) == (2, 0)
        again = await dlq.replay([dlq_topic], await dlq.select([dlq_topic], Filters()))
        assert (again.replayed, again.skipped_replayed) == (0, 2)  # once, unless forced
    finally:
        await pool.close()
    replays = await read_records(s.kafka.bootstrap, origin, 5, timeout=10)
    assert len(replays) == 5  # 3 from the first topic, 2 from the new one
