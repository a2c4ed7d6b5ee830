"""A stopped pipeline is freed: its reader, processor and tables (every dedup key
it held) do not outlive it.  faust keeps signal receivers in the App class for
the life of the process, and start() freezes the objects of the garbage
collector; before stop() undid both, every pipeline run in a process stayed in
memory (bench/pipeline.py (b) ran 20% slower after (a): 50,000 dedup entries of
(a)'s pipelines spread over the heap)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from eventpipe.context import Context
from eventpipe.db.pool import open_pool
from eventpipe.envelope import CloudEvent
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.pipelines.runtime import PipelineRuntime
from eventpipe.pipelines.spec import PipelineSpec
from eventpipe.publisher import Publisher
from eventpipe.service.catalog import CATALOG
from eventpipe.settings import Settings
from tests.integration.test_pipeline_support import ident


async def run_and_stop(settings: Settings, name: str, n: int) -> tuple[weakref.ref[object], ...]:
    pool = await open_pool(settings.database)
    async with Publisher(settings) as pub, TopicAdmin(settings.kafka) as admin:
        spec = PipelineSpec.model_validate(
            {
                "name": name,
                "source": {"topics": [name]},
                "sinks": [{"topic": {"topic": f"{name}-out"}}],
                "state": {"dedup_window": "1h"},
            }
        )
        rt = PipelineRuntime(spec, Context(settings, pub, admin, pool, CATALOG))
        try:
            await rt.start()
            events = [CloudEvent.create("t", "/stop", {"i": i}, id=f"e{i}") for i in range(n)]
            await pub.publish_batch(name, events)
            assert rt.processor is not None and rt.processor.dedup is not None
            table = rt.processor.dedup.table
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while loop.time() < deadline:
                if len(table) >= n:
                    break
                await asyncio.sleep(0.1)
            assert len(table) == n, "the pipeline did not take every event"
            refs = (weakref.ref(rt), weakref.ref(rt.processor), weakref.ref(rt.reader))
        finally:
            await rt.stop()
            await pool.close()
        del rt, table
    return refs


async def test_a_stopped_pipeline_and_its_tables_are_freed(settings: Settings) -> None:
    refs = await run_and_stop(settings, ident("stop"), 200)
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert alive == [], f"still referenced after stop: {[type(o).__name__ for o in alive]}"
