"""Problems that would only show as dead letters are start errors, all reported at
once: a Postgres sink's missing table, columns or conflict key, a source's missing
topic, before any component starts.  A pipeline's unregistered schema subject is
not one (the pipeline waits for it: test_pipeline_schema_wait.py); `eventpipe
check` warns about it.  The webhook source's dead-letter topic is created as a
pipeline's is.  `eventpipe check` reports the same problems, offline ones too, and
exits 0 / 2."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import yaml
from aiohttp import ClientSession

from eventpipe.cli.main import main
from eventpipe.errors import ConfigError
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.schema_registry.models import Schema
from eventpipe.schema_registry.registry import SchemaRegistry
from eventpipe.service.context import open_context
from eventpipe.service.runner import Service
from eventpipe.settings import Settings, TopicSpec, load_settings
from tests.helpers import read_records

WHSEC = "whsec_" + base64.b64encode(b"preflight-test-key-0123456789ab").decode()


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _settings(base: Settings, tmp: Path, **sections: Any) -> Settings:
    path = tmp / "sections.yaml"
    path.write_text(yaml.safe_dump(sections))
    return load_settings(
        path,
        environ={},
        overrides={
            "kafka": {"bootstrap": base.kafka.bootstrap},
            "database": {"url": base.database.url.get_secret_value(), "pool_max": 4},
            "service": {"port": 0},
        },
    )


def _create_tables(url: str, *ddl: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for stmt in ddl:
            conn.execute(stmt)


def _broken_config(u: str) -> dict[str, Any]:
    """Four pipelines and a webhook source, each wrong in a way only the database,
    the broker or the registry can tell."""
    return {
        "pipelines": [
            {
                "name": f"pf-a-{u}",
                "source": {"topics": [f"pf-in-a-{u}"]},
                "validate_input": {"subject": f"pf-missing-{u}-value"},
                "sinks": [{"postgres": {"table": f"pf_missing_{u}", "columns": {"id": ".id"}}}],
            },
            {
                "name": f"pf-b-{u}",
                "source": {"topics": [f"pf-in-b-{u}"]},
                "sinks": [
                    {
                        "postgres": {
                            "table": f"public.pf_orders_{u}",
                            "mode": "upsert",
                            "key": ["id"],
                            "columns": {"id": ".data.id", "totl": ".data.total"},
                        }
                    }
                ],
            },
            {
                "name": f"pf-c-{u}",
                "source": {"topics": [f"pf-in-c-{u}"]},
                "sinks": [
                    {
                        "postgres": {
                            "table": f"pf_nokey_{u}",
                            "mode": "upsert",
                            "key": ["id"],
                            "columns": {"id": ".data.id", "total": ".data.total"},
                        }
                    }
                ],
            },
        ],
        "sources": [
            {
                "type": "webhook",
                "name": f"pf-hook-{u}",
                "topic": f"pf-nowhere-{u}",
                "verify": {"scheme": "standard-webhooks", "secrets": [WHSEC]},
            }
        ],
    }


WAITS_FOR = "pipelines[0].validate_input.subject"  # a warning: the pipeline waits for it
BROKEN_PATHS = {
    "pipelines[0].sinks[0].postgres.table",
    "pipelines[1].sinks[0].postgres.columns.totl",
    "pipelines[2].sinks[0].postgres.key",
    "sources[0].topic",
}


def _tables(url: str, u: str) -> None:
    _create_tables(
        url,
        f"create table pf_orders_{u} (id text primary key, total numeric)",
        f"create table pf_nokey_{u} (id text, total numeric)",
    )


async def test_start_reports_every_problem_at_once_before_anything_starts(
    settings: Settings, tmp_path: Path
) -> None:
    u = _uid()
    _tables(settings.database.url.get_secret_value(), u)
    s = _settings(settings, tmp_path, **_broken_config(u))
    service = Service(s, "all")
    with pytest.raises(ConfigError) as ei:
        await service.start()
    paths = {p for p, _ in ei.value.problems}
    assert paths >= BROKEN_PATHS and WAITS_FOR not in paths, ei.value
    text = str(ei.value)
    assert f"pf_missing_{u}" in text and "totl" in text and f"pf-nowhere-{u}" in text
    # Nothing started: the pipelines would have created their source topics.
    async with TopicAdmin(s.kafka) as admin:
        topics = await admin.list_topics()
    assert not {f"pf-in-a-{u}", f"pf-in-b-{u}", f"pf-in-c-{u}"} & topics


async def test_webhook_dead_letter_topic_is_created_like_a_pipelines(
    settings: Settings, topic: str, tmp_path: Path
) -> None:
    name = f"pf-hook-{_uid()}"
    s = _settings(
        settings,
        tmp_path,
        topics=[{"name": topic}],
        sources=[
            {
                "type": "webhook",
                "name": name,
                "topic": topic,
                "verify": {"scheme": "standard-webhooks", "secrets": [WHSEC]},
                "dead_letter": {"on": [401, 422]},
            }
        ],
    )
    assert not s.kafka.auto_create_topics
    service = Service(s, "ingest")
    await service.start()
    try:
        async with TopicAdmin(s.kafka) as admin:
            assert f"{topic}.dlq" in await admin.list_topics()
        async with (
            ClientSession() as http,
            http.post(
                f"{service.url}/webhooks/{name}",
                data=b'{"a": 1}',
                headers={
                    "content-type": "application/json",
                    "webhook-id": "msg_1",
                    "webhook-timestamp": "1",
                    "webhook-signature": "v1,AAAA",
                },
            ) as r,
        ):
            assert r.status == 401
        [letter] = await read_records(s.kafka.bootstrap, f"{topic}.dlq", 1)
        assert letter.value == b'{"a": 1}'
    finally:
        await service.stop()


def _write(tmp: Path, cfg: dict[str, Any]) -> Path:
    path = tmp / "eventpipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("EVENTPIPE_KAFKA_BOOTSTRAP", settings.kafka.bootstrap)
    monkeypatch.setenv("EVENTPIPE_DATABASE_URL", settings.database.url.get_secret_value())


async def test_check_reports_config_database_broker_and_registry_problems_together(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    u = _uid()
    _tables(settings.database.url.get_secret_value(), u)
    cfg = _broken_config(u)
    # and one problem only the config shows: `name` names the sink, not the topic
    cfg["pipelines"].append(
        {
            "name": f"pf-d-{u}",
            "source": {"topics": [f"pf-in-d-{u}"]},
            "sinks": [{"topic": {"name": f"pf-out-{u}"}}],
        }
    )
    _env(monkeypatch, settings)
    path = _write(tmp_path, cfg)
    code = await _main(["check", "-c", str(path)])
    out = capsys.readouterr()
    assert code == 2, out
    for p in [*BROKEN_PATHS, "pipelines[3].sinks[0].topic.topic"]:
        assert p in out.out, (p, out.out)
    warned, problems = out.out.split("problem(s)")
    assert "1 warning(s)" in warned and WAITS_FOR in warned and WAITS_FOR not in problems
    assert "will start waiting for it" in warned
    async with TopicAdmin(settings.kafka) as admin:
        assert f"pf-in-a-{u}" not in await admin.list_topics()  # check creates nothing

    # Fixed everywhere: exit 0.
    _create_tables(
        settings.database.url.get_secret_value(),
        f"create table pf_missing_{u} (id text)",
        f"alter table pf_orders_{u} rename column total to totl",
        f"create unique index on pf_nokey_{u} (id)",
    )
    ctx = await open_context(settings, broker_wait_s=5)
    try:
        assert ctx.pool is not None
        await SchemaRegistry(ctx.pool).register(
            f"pf-missing-{u}-value", Schema(orjson.dumps({"type": "object"}).decode(), "JSON")
        )
        await ctx.admin.ensure_topics([TopicSpec(name=f"pf-nowhere-{u}")])
    finally:
        await ctx.close()
    cfg["pipelines"][3]["sinks"] = [{"topic": {"topic": f"pf-out-{u}"}}]
    path = _write(tmp_path, cfg)
    code = await _main(["check", "-c", str(path)])
    out = capsys.readouterr()
    assert code == 0, out
    assert "no problems" in out.out


async def test_check_skips_what_it_cannot_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from eventpipe.embedded.process import free_port

    monkeypatch.setenv("EVENTPIPE_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("EVENTPIPE_DATABASE_URL", f"postgresql://x@127.0.0.1:{free_port()}/x")
    u = _uid()
    path = _write(tmp_path, _broken_config(u))
    code = await _main(["check", "-c", str(path), "--timeout", "2"])
    out = capsys.readouterr()
    assert code == 0, out  # nothing wrong that could be seen
    assert "database checks skipped" in out.err and "broker checks skipped" in out.err


async def _main(argv: list[str]) -> int:
    # main() runs its own event loop: keep it off this test's loop.
    import asyncio

    return await asyncio.to_thread(main, argv)
