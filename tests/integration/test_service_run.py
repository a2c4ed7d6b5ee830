"""`eventpipe run` as a process: roles, graceful shutdown that drains in-flight
requests and flushes the producer (every 202 is on the topic)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import orjson
import pytest

from eventpipe.embedded.process import free_port
from eventpipe.settings import Settings
from tests.helpers import read_events


def _start(
    settings: Settings, tmp: Path, topic: str, role: str = "ingest"
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cfg = tmp / "svc.yaml"
    cfg.write_text(f"service:\n  port: {port}\ntopics:\n  - name: {topic}\n")
    env = dict(
        os.environ,
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        EVENTPIPE_DATABASE_URL=settings.database.url.get_secret_value(),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventpipe", "run", "-c", str(cfg), "--role", role],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return proc, f"http://127.0.0.1:{port}"


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("service not ready")


async def test_sigterm_drains_in_flight_requests(
    settings: Settings, topic: str, tmp_path: Path
) -> None:
    proc, url = _start(settings, tmp_path, topic)
    try:
        await asyncio.to_thread(_wait_ready, url, proc)
        statuses: dict[str, int | str] = {}
        first_answer = asyncio.Event()

        async def post(s: aiohttp.ClientSession, i: int) -> None:
            body = orjson.dumps(
                {
                    "specversion": "1.0",
                    "id": f"drain-{i}",
                    "source": "/t",
                    "type": "t",
                    "data": {"i": i},
                }
            )
            try:
                async with s.post(
                    f"{url}/v1/topics/{topic}/events",
                    data=body,
                    headers={"content-type": "application/cloudevents+json"},
                ) as r:
                    statuses[f"drain-{i}"] = r.status
                    first_answer.set()
            except aiohttp.ClientError as exc:
                statuses[f"drain-{i}"] = type(exc).__name__

        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(post(s, i)) for i in range(400)]
            # Signal while most requests are still in flight.
            await asyncio.wait_for(first_answer.wait(), 30)
            proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*tasks)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    accepted = {k for k, v in statuses.items() if v == 202}
    # Nothing but 202 or a refused/closed connection: no 5xx for requests it took.
    assert all(v == 202 or isinstance(v, str) for v in statuses.values()), statuses
    assert accepted, "no request was accepted before shutdown"
    events = await read_events(settings.kafka.bootstrap, topic, len(accepted))
    assert accepted <= {e.id for e in events}


@pytest.mark.parametrize("role", ["pipelines", "cdc"])
async def test_non_ingest_roles_serve_only_ops_endpoints(
    settings: Settings, topic: str, tmp_path: Path, role: str
) -> None:
    proc, url = _start(settings, tmp_path, topic, role)
    try:
        await asyncio.to_thread(_wait_ready, url, proc)
        async with aiohttp.ClientSession() as s:
            async with s.get(url + "/metrics") as r:
                text = await r.text()
                assert r.status == 200 and "eventpipe_" in text
                # the loop monitor runs in every role (a timer every 100 ms)
                assert "eventpipe_event_loop_lag_seconds_count" in text
            async with s.post(f"{url}/v1/topics/{topic}/events", data=b"{}") as r:
                assert r.status == 404  # the publish API is the ingest role's
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_bad_config_reports_every_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("service:\n  port: nope\nkafka:\n  acks: 7\nbogus: 1\n")
    r = subprocess.run(
        [sys.executable, "-m", "eventpipe", "run", "-c", str(cfg)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    err = r.stderr.decode()
    assert r.returncode == 2
    for path in ("service.port", "kafka.acks", "bogus"):
        assert path in err, err
