"""Tracing in the benchmarks: ``BENCH_OTEL=both`` makes bench/pipeline.py and
bench/webhook.py measure their eventpipe path again with tracing on, in the same
run, and print on against off as a ratio.  (A helper, not a benchmark.)

"On" is what a deployment runs: the OpenTelemetry SDK with its batch span
processor and the OTLP/HTTP exporter, sending to a collector.  The collector here
is a bare aiohttp process on loopback that answers every export 200 and counts
what it got (requests, bytes), so the export's own cost lands in eventpipe's
process, and next to none in the collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson

from eventpipe import loop
from eventpipe.embedded.process import free_port

MODE = os.environ.get("BENCH_OTEL", "off")  # off | both | only
if MODE not in ("off", "both", "only"):
    raise SystemExit(f"BENCH_OTEL={MODE!r}: use off (default), both, or only (just on vs off)")
ON = MODE != "off"  # measure with tracing on too
ONLY = MODE == "only"  # and nothing else


def collector_main(port: int) -> None:
    from aiohttp import web

    stats = {"requests": 0, "bytes": 0}

    async def export(request: web.Request) -> web.Response:
        stats["requests"] += 1
        stats["bytes"] += len(await request.read())
        return web.Response(status=200, content_type="application/x-protobuf")

    async def report(request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def serve() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", export)
        app.router.add_get("/stats", report)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    loop.run(serve())


@contextlib.asynccontextmanager
async def collector() -> AsyncIterator[str]:
    """A collector process for the run; yields its base URL (the OTLP endpoint)."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.otel", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await stats(url)
                break
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline or proc.returncode is not None:
                    raise
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def stats(url: str) -> dict[str, int]:
    """What the collector received so far: export requests and bytes."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
        http.get(url + "/stats") as r,
    ):
        return dict(orjson.loads(await r.read()))


@contextlib.asynccontextmanager
async def tracing(url: str) -> AsyncIterator[None]:
    """Tracing on in this process (as `eventpipe run` turns it on), exporting to ``url``;
    on exit every buffered span is exported and tracing is off again."""
    from eventpipe import telemetry
    from eventpipe.settings import Settings

    settings = Settings.model_validate({"telemetry": {"otlp_endpoint": url}})
    assert telemetry.setup(settings, environ={})
    try:
        yield
    finally:
        await asyncio.to_thread(telemetry.shutdown)


def traceparent(i: int) -> str:
    """A distinct valid W3C traceparent for event ``i`` (a caller's trace each)."""
    return f"00-{i + 1:032x}-{i + 1:016x}-01"


if __name__ == "__main__":
    collector_main(int(sys.argv[1]))
