"""`eventpipe publish` and `eventpipe tail` as a user runs them (subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from eventpipe.settings import Settings
from tests.helpers import read_events


def ep(
    *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "eventpipe", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def test_publish_one_then_tail_sees_it(settings: Settings, topic: str) -> None:
    bs = settings.kafka.bootstrap
    r = ep(
        "publish",
        "--bootstrap",
        bs,
        "--topic",
        topic,
        "--type",
        "demo.greeting",
        "--source",
        "/demo",
        "--subject",
        "s1",
        "--id",
        "id-1",
        "--key",
        "k1",
        "--data",
        '{"hello": "world"}',
    )
    assert r.returncode == 0, r.stderr.decode()
    ack = orjson.loads(r.stdout)
    assert ack["id"] == "id-1" and ack["topic"] == topic
    t = ep(
        "tail",
        "--bootstrap",
        bs,
        "--topic",
        topic,
        "--from-beginning",
        "--max",
        "1",
        "--idle-timeout",
        "10",
    )
    assert t.returncode == 0, t.stderr.decode()
    [line] = t.stdout.decode().splitlines()
    ev = orjson.loads(line)
    assert ev["id"] == "id-1" and ev["type"] == "demo.greeting" and ev["subject"] == "s1"
    assert ev["data"] == {"hello": "world"} and ev["partitionkey"] == "k1"


def test_tail_with_jq(settings: Settings, topic: str) -> None:
    bs = settings.kafka.bootstrap
    assert (
        ep(
            "publish",
            "--bootstrap",
            bs,
            "--topic",
            topic,
            "--type",
            "t",
            "--source",
            "/s",
            "--data",
            '{"n": 41}',
        ).returncode
        == 0
    )
    t = ep(
        "tail",
        "--bootstrap",
        bs,
        "--topic",
        topic,
        "--from-beginning",
        "--max",
        "1",
        "--jq",
        ".data.n + 1",
        "--idle-timeout",
        "10",
    )
    assert t.stdout.decode().split() == ["42"]


def test_publish_data_from_file(settings: Settings, topic: str, tmp_path: Path) -> None:
    f = tmp_path / "d.json"
    f.write_text('{"from": "file"}')
    r = ep(
        "publish",
        "--bootstrap",
        settings.kafka.bootstrap,
        "--topic",
        topic,
        "--type",
        "t",
        "--source",
        "/s",
        "--data",
        f"@{f}",
    )
    assert r.returncode == 0, r.stderr.decode()


def test_ndjson_bulk_with_failures(settings: Settings, topic: str, tmp_path: Path) -> None:
    lines = [orjson.dumps({"n": i}).decode() for i in range(1200)]
    lines.insert(7, "{broken")
    lines.insert(
        500, orjson.dumps({"specversion": "1.0", "id": "", "source": "/s", "type": "t"}).decode()
    )
    lines.append(
        orjson.dumps(
            {"specversion": "1.0", "id": "full-1", "source": "/x", "type": "full", "data": 1}
        ).decode()
    )
    src = tmp_path / "in.ndjson"
    src.write_text("\n".join(lines) + "\n")
    r = ep(
        "publish",
        "--bootstrap",
        settings.kafka.bootstrap,
        "--topic",
        topic,
        "--type",
        "bulk",
        "--source",
        "/bulk",
        "--ndjson",
        str(src),
    )
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "sent 1201, failed 2" in err
    failed = (tmp_path / "in.ndjson.failed").read_text().splitlines()
    assert failed[0] == "{broken" and '"id":""' in failed[1]
    events = await_events(settings, topic, 1201)
    assert len(events) == 1201
    assert {e.id for e in events if e.type == "full"} == {"full-1"}


def await_events(settings: Settings, topic: str, n: int) -> list:
    import asyncio

    return asyncio.run(read_events(settings.kafka.bootstrap, topic, n))


def test_ndjson_from_stdin(settings: Settings, topic: str, tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "eventpipe",
            "publish",
            "--bootstrap",
            settings.kafka.bootstrap,
            "--topic",
            topic,
            "--type",
            "t",
            "--source",
            "/s",
            "--ndjson",
            "-",
        ],
        input=b'{"a":1}\n{"a":2}\n',
        capture_output=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr.decode()
    assert "sent 2, failed 0" in r.stderr.decode()


def test_errors_name_the_fix(settings: Settings, topic: str) -> None:
    bs = settings.kafka.bootstrap
    topic_name = topic + "-missing"
    r = ep(
        "publish",
        "--bootstrap",
        bs,
        "--topic",
        topic,
        "--type",
        "t",
        "--source",
        "/s",
        "--data",
        "{oops",
    )
    assert r.returncode == 2 and b"--data is not valid JSON" in r.stderr
    r = ep("publish", "--bootstrap", bs, "--topic", topic, "--data", "{}")
    assert r.returncode == 2 and b"--type and --source are required" in r.stderr
    r = ep(
        "publish",
        "--bootstrap",
        bs,
        "--topic",
        topic_name,
        "--type",
        "t",
        "--source",
        "/s",
        "--data",
        "1",
    )
    assert r.returncode == 2 and b"--create-topic" in r.stderr
    r = ep(
        "publish",
        "--bootstrap",
        bs,
        "--topic",
        topic_name,
        "--type",
        "t",
        "--source",
        "/s",
        "--data",
        "1",
        "--create-topic",
    )
    assert r.returncode == 0, r.stderr.decode()
    r = ep("tail", "--bootstrap", bs, "--topic", topic, "--jq", ".[")
    assert r.returncode == 2 and b"does not compile" in r.stderr
