"""`eventpipe dev` as a newcomer runs it: embedded stack up, the printed publish
command works, `tail` shows the event, Ctrl-C / SIGTERM / kill -9 leave nothing."""

from __future__ import annotations

import hashlib
import hmac
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import psutil
import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


class DevProcess:
    def __init__(self, tmp: Path, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "eventpipe",
                "dev",
                "-c",
                "examples/eventpipe.yaml",
                "--port",
                "0",
                "--postgres-port",
                "0",
                "--kafka-port",
                "0",
                "--data-dir",
                str(tmp / "data"),
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def close(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if m := rx.search(line):
                return m
        raise AssertionError(f"{pattern!r} not seen; output:\n" + "\n".join(self.output))

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


def _run_printed(cmd: str) -> subprocess.CompletedProcess[bytes]:
    argv = shlex.split(cmd)
    assert argv[0] == ".venv/bin/eventpipe"
    return subprocess.run(
        [sys.executable, "-m", "eventpipe", *argv[1:]],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def _order(url: str, db_url: str, order_id: str) -> tuple[object, ...] | None:
    """Send the demo's signed webhook for ``order_id``; its demo_orders row, once it
    landed (None if it did not within 20 s)."""
    body = orjson.dumps({"id": order_id, "customer": "c-7", "status": "created", "total": 42.5})
    sig = hmac.new(b"demo-secret-change-me", body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        f"{url}/webhooks/shop",
        data=body,
        method="POST",
        headers={"content-type": "application/json", "x-signature": sig},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    for _ in range(100):
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "select customer, total from demo_orders where id = %s", (order_id,)
            ).fetchone()
        if row:
            return row
        time.sleep(0.2)
    return None


def _gone(procs: list[psutil.Process], timeout: float = 15) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_dev_runs_the_demo_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    dev = DevProcess(tmp_path)
    try:
        url = dev.wait_for(r"HTTP API\s+(http://\S+)").group(1)
        console = dev.wait_for(r"Console\s+(http://\S+)").group(1)
        db_url = dev.wait_for(r"PostgreSQL\s+(postgresql://\S+)").group(1)
        publish = dev.wait_for(r"^\s+(\.venv/bin/eventpipe publish .*)$").group(1)
        curl = dev.wait_for(r"^\s+(curl .*)$").group(1)
        tail = dev.wait_for(r"^\s+(\.venv/bin/eventpipe tail .*)$").group(1)
        children = dev.children()
        names = {p.name() for p in children}
        assert any("postgres" in n for n in names) and any("tansu" in n for n in names), names

        r = _run_printed(publish)
        assert r.returncode == 0, r.stderr.decode()
        published_id = orjson.loads(r.stdout)["id"]

        # The printed curl example, sent as curl would.
        argv = shlex.split(curl)
        body = argv[argv.index("-d") + 1].encode()
        req = urllib.request.Request(
            argv[argv.index("-X") + 2],
            data=body,
            method="POST",
            headers={"content-type": "application/cloudevents+json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 202
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as resp:
            assert orjson.loads(resp.read())["status"] == "ready"
        # The console: printed, and / leads to its login (the demo has an admin token).
        assert console == f"{url}/console/"
        with urllib.request.urlopen(f"{url}/", timeout=10) as resp:
            assert resp.url.startswith(f"{url}/console/login") and b"Admin token" in resp.read()

        # The demo's webhook -> pipeline -> Postgres path, signed as the README shows.
        row = _order(url, db_url, "o-1")
        assert row is not None and row[0] == "c-7" and float(row[1]) == 42.5

        t = _run_printed(tail + " --max 2 --idle-timeout 10")
        ids = {orjson.loads(line)["id"] for line in t.stdout.decode().splitlines()}
        assert ids == {published_id, "evt-1"}
    finally:
        dev.proc.send_signal(stop_signal)
        code = dev.close()
    assert code == 0, "\n".join(dev.output)
    assert _gone(children), "children left behind"
    assert any("stopped" in line for line in dev.output)


def test_dev_keeps_landing_orders_across_restarts(tmp_path: Path) -> None:
    """The embedded broker starts empty each time while .eventpipe/pg keeps the sink's
    marks: the new topic's orders (from offset 0 again) must land, not be skipped."""
    for order_id in ("o-1", "o-2"):
        dev = DevProcess(tmp_path)
        try:
            url = dev.wait_for(r"HTTP API\s+(http://\S+)").group(1)
            db_url = dev.wait_for(r"PostgreSQL\s+(postgresql://\S+)").group(1)
            assert _order(url, db_url, order_id) is not None, (
                f"{order_id} did not land; output:\n" + "\n".join(dev.output)
            )
        finally:
            dev.proc.send_signal(signal.SIGTERM)
            code = dev.close()
        assert code == 0, "\n".join(dev.output)


def test_kill_9_of_dev_leaves_no_process(tmp_path: Path) -> None:
    dev = DevProcess(tmp_path)
    dev.wait_for(r"eventpipe dev is running")
    children = dev.children()
    assert children
    dev.proc.kill()
    dev.close(10)
    assert _gone(children), "children survived kill -9 of their parent"


def test_second_dev_on_the_same_data_dir_is_refused_and_the_first_stays_ready(
    tmp_path: Path,
) -> None:
    first = DevProcess(tmp_path)
    try:
        url = first.wait_for(r"HTTP API\s+(http://\S+)").group(1)
        db_url = first.wait_for(r"PostgreSQL\s+(postgresql://\S+)").group(1)
        children = first.children()

        second = DevProcess(tmp_path)  # same data dir, other (free) ports
        try:
            code = second.close(90)
        finally:
            if second.proc.poll() is None:
                second.proc.send_signal(signal.SIGINT)
                second.close()
        out = "\n".join(second.output)
        assert code == 2, out
        assert str((tmp_path / "data").resolve()) in out, out
        assert f"pid {first.proc.pid}" in out, out

        # The first one is untouched: its processes, its database, its readiness.
        assert all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)
        with psycopg.connect(db_url, connect_timeout=5) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as resp:
            assert orjson.loads(resp.read())["status"] == "ready"
    finally:
        first.proc.send_signal(signal.SIGINT)
        code = first.close()
    assert code == 0, "\n".join(first.output)


@pytest.mark.parametrize("flag", ["--kafka-port", "--port"])
def test_taken_port_is_a_clear_error_before_anything_starts(tmp_path: Path, flag: str) -> None:
    ports = {"--port": "0", "--postgres-port": "0", "--kafka-port": "0"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        ports[flag] = str(port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "eventpipe",
                "dev",
                *[x for kv in ports.items() for x in kv],
                "--data-dir",
                str(tmp_path / "d"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=90,
            check=False,
        )
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert f"port {port}" in err and flag in err
    # Every port was checked before anything started: no database was even created.
    assert not (tmp_path / "d" / "pg").exists()
    assert not (tmp_path / "d" / "postgres.log").exists()
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        assert str(tmp_path) not in cmd or p.status() == psutil.STATUS_ZOMBIE, cmd
