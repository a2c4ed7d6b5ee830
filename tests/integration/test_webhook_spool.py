"""The webhook spool on the real Postgres: requests that share a group commit are
isolated from each other's bad rows."""

from __future__ import annotations

import asyncio
import uuid

from eventpipe.connectors.webhook.spool import Spool, SpoolRecord, SpoolState
from eventpipe.db.pool import open_pool
from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.errors import PermanentError
from eventpipe.settings import Settings


def _record(topic: str, event_id: str, subject: bytes) -> SpoolRecord:
    headers = [("ce_id", event_id.encode()), ("ce_subject", subject)]
    return SpoolRecord(topic, event_id, KafkaMessage(None, b'{"n": 1}', headers))


async def test_one_unstorable_row_fails_only_its_own_request(settings: Settings) -> None:
    source = f"spool-{uuid.uuid4().hex[:8]}"
    pool = await open_pool(settings.database)
    try:
        spool = Spool(pool, source, SpoolState(), dedup=True, timeout_s=10)
        # jsonb cannot hold U+0000: the middle request's row is refused by Postgres
        writes = [
            spool.write([_record("t", "good-1", b"fine")], ["good-1"]),
            spool.write([_record("t", "bad-1", b"a\x00b")], ["bad-1"]),
            spool.write([_record("t", "good-2", b"also fine")], ["good-2"]),
        ]
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert results[0] is None and results[2] is None, results
        assert isinstance(results[1], PermanentError), results
        async with pool.connection() as conn:
            cur = await conn.execute(
                "select event_id from eventpipe.webhook_spool where source = %s order by id",
                (source,),
            )
            assert [r[0] for r in await cur.fetchall()] == ["good-1", "good-2"]
            cur = await conn.execute(
                "select delivery_id from eventpipe.webhook_dedup where source = %s "
                "order by delivery_id",
                (source,),
            )
            assert [r[0] for r in await cur.fetchall()] == ["good-1", "good-2"]
            await conn.execute("delete from eventpipe.webhook_spool where source = %s", (source,))
            await conn.execute("delete from eventpipe.webhook_dedup where source = %s", (source,))
    finally:
        await pool.close()
