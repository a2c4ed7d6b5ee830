"""``eventpipe schemas ...`` against a live registry, and ``eventpipe schema-registry
serve`` as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from eventpipe.cli.main import main
from eventpipe.db.pool import open_pool
from eventpipe.schema_registry.client import SchemaRegistryClient
from eventpipe.schema_registry.server import build_registry_app
from eventpipe.settings import Settings


@pytest.fixture
async def registry_url(settings: Settings) -> AsyncIterator[str]:
    pool = await open_pool(settings.database)
    server = TestServer(build_registry_app(pool), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        await pool.close()


@pytest.fixture
def subject() -> str:
    return f"cli-{uuid.uuid4().hex[:12]}-value"


async def cli(*argv: str) -> int:
    """The synchronous CLI (it runs its own event loop) in a thread."""
    return await asyncio.to_thread(main, list(argv))


def write(tmp_path: Path, name: str, doc: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=2))
    return str(path)


async def test_register_list_show_check_delete(
    registry_url: str, subject: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"Order{uuid.uuid4().hex}"
    v1 = write(
        tmp_path,
        "v1.avsc",
        {
            "type": "record",
            "name": name,
            "namespace": "com.acme",
            "fields": [{"name": "id", "type": "long"}],
        },
    )
    v2_bad = write(
        tmp_path,
        "v2.avsc",
        {
            "type": "record",
            "name": name,
            "namespace": "com.acme",
            "fields": [{"name": "id", "type": "long"}, {"name": "email", "type": "string"}],
        },
    )
    reg = ("--registry", registry_url)

    assert await cli("schemas", "register", subject, v1, *reg) == 0
    out = capsys.readouterr().out
    assert f"registered {subject} version 1 (id " in out

    assert await cli("schemas", "list", *reg) == 0
    assert subject in capsys.readouterr().out.split()
    assert await cli("schemas", "list", subject, *reg) == 0
    assert capsys.readouterr().out.split() == ["1"]

    assert await cli("schemas", "show", subject, *reg) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["name"] == name
    assert f"{subject} version 1" in captured.err

    assert await cli("schemas", "check", subject, v2_bad, *reg) == 1
    out = capsys.readouterr().out
    assert "incompatible" in out
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in out and "'email'" in out
    assert await cli("schemas", "check", subject, v1, "--version", "1", *reg) == 0
    assert "compatible with" in capsys.readouterr().out

    assert await cli("schemas", "delete", subject, "--version", "1", *reg) == 0
    assert "soft-deleted" in capsys.readouterr().out
    assert await cli("schemas", "delete", subject, "--permanent", *reg) == 0
    assert "permanently deleted" in capsys.readouterr().out


async def test_json_schema_file_and_type_guess(
    registry_url: str, subject: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "order.json",
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"a": {}},
        },
    )
    assert await cli("schemas", "register", subject, path, "--registry", registry_url) == 0
    capsys.readouterr()
    assert await cli("schemas", "show", subject, "--registry", registry_url) == 0
    assert "type JSON" in capsys.readouterr().err


async def test_clear_errors(
    registry_url: str, subject: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = ("--registry", registry_url)
    assert await cli("schemas", "show", subject, *reg) == 2
    assert f"Subject '{subject}' not found" in capsys.readouterr().err
    bad = write(tmp_path, "bad.avsc", {"type": "record", "name": "X"})
    assert await cli("schemas", "register", subject, bad, *reg) == 2
    err = capsys.readouterr().err
    assert "Invalid schema" in err and "42201" in err
    assert await cli("schemas", "register", subject, str(tmp_path / "missing.avsc"), *reg) == 2
    assert "cannot read" in capsys.readouterr().err
    assert await cli("schemas", "register", subject, bad, "--ref", "nonsense", *reg) == 2
    assert "NAME=SUBJECT:VERSION" in capsys.readouterr().err


async def test_references_from_the_command_line(
    registry_url: str, subject: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    addr_name = f"Addr{uuid.uuid4().hex}"
    addr = write(
        tmp_path,
        "addr.avsc",
        {
            "type": "record",
            "name": addr_name,
            "namespace": "com.acme",
            "fields": [{"name": "city", "type": "string"}],
        },
    )
    order = write(
        tmp_path,
        "order.avsc",
        {
            "type": "record",
            "name": f"O{uuid.uuid4().hex}",
            "namespace": "com.acme",
            "fields": [{"name": "to", "type": f"com.acme.{addr_name}"}],
        },
    )
    reg = ("--registry", registry_url)
    assert await cli("schemas", "register", subject + "-addr", addr, *reg) == 0
    ref = f"com.acme.{addr_name}={subject}-addr:latest"
    assert await cli("schemas", "register", subject, order, "--ref", ref, *reg) == 0
    capsys.readouterr()
    assert await cli("schemas", "show", subject, *reg) == 0
    assert f"reference com.acme.{addr_name} = {subject}-addr version 1" in (capsys.readouterr().err)


async def test_schema_registry_serve_runs_alone(settings: Settings, subject: str) -> None:
    env = {**os.environ, "EVENTPIPE_DATABASE_URL": settings.database.url.get_secret_value()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventpipe.cli.main",
        "schema-registry",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert "schema registry serving on http://127.0.0.1:" in line, line
        url = line.strip().rsplit(" ", 1)[-1]
        async with SchemaRegistryClient(url) as c:
            schema_id = await c.register(subject, '"string"')
            assert (await c.get_latest(subject)).id == schema_id
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0
