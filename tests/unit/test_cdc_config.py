"""The postgres_cdc and outbox source configs, as `sources:` entries in the YAML."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventpipe.connectors.outbox.relay import OutboxConfig, OutboxEntry
from eventpipe.connectors.postgres_cdc.config import PostgresCdcConfig, PostgresCdcEntry
from eventpipe.errors import ConfigError
from eventpipe.service.config import ServiceConfig, load_config


@pytest.fixture
def load(tmp_path: Path) -> Callable[..., ServiceConfig]:
    def _load(*entries: dict[str, Any]) -> ServiceConfig:
        path = tmp_path / "eventpipe.yaml"
        path.write_text(yaml.safe_dump({"sources": list(entries)}))
        return load_config(path, environ={})

    return _load


def test_minimal_entry_and_name_derived_defaults(load: Callable[..., ServiceConfig]) -> None:
    s = load({"type": "postgres_cdc", "name": "Shop-DB", "tables": ["orders", "inv.items"]})
    cfg = s.sources[0]
    assert isinstance(cfg, PostgresCdcEntry) and cfg.name == "Shop-DB"
    assert cfg.tables == ["public.orders", "inv.items"]
    assert cfg.slot_name("Shop-DB") == "eventpipe_shop_db"
    assert cfg.publication_name("Shop-DB") == "eventpipe_shop_db"
    assert cfg.topic_for("Shop-DB", "inv", "items") == "Shop-DB.inv.items"
    assert cfg.snapshot == "initial" and cfg.numeric == "string"
    assert cfg.toast_placeholder == "__debezium_unavailable_value"


def test_every_problem_is_reported_with_its_path(load: Callable[..., ServiceConfig]) -> None:
    with pytest.raises(ConfigError) as ei:
        load(
            {
                "type": "postgres_cdc",
                "name": "a",
                "tables": ["orders"],
                "slot": "Bad-Slot",
                "topic": "{prefix}.{tabel}",
                "snapshot": "sometimes",
                "batchsize": 10,
            },
            {"type": "postgres_cdc", "name": "b", "tables": []},
        )
    paths = {p for p, _ in ei.value.problems}
    assert {
        "sources[0].slot",
        "sources[0].topic",
        "sources[0].snapshot",
        "sources[0].batchsize",
        "sources[1].tables",
    } <= paths
    msgs = dict(ei.value.problems)
    assert "did you mean 'batch_size'?" in msgs["sources[0].batchsize"]
    assert "{prefix}" in msgs["sources[0].topic"]


def test_cross_field_rules() -> None:
    with pytest.raises(ValueError, match="key_columns names tables"):
        PostgresCdcConfig(tables=["a"], key_columns={"b": ["id"]})
    with pytest.raises(ValueError, match="twice heartbeat_interval_s"):
        PostgresCdcConfig(tables=["a"], heartbeat_interval_s=10, stall_timeout_s=15)
    with pytest.raises(ValueError, match="listed twice"):
        PostgresCdcConfig(tables=["a", "public.a"])
    with pytest.raises(ValueError, match=r"schema\.table"):
        PostgresCdcConfig(tables=["a.b.c"])
    cfg = PostgresCdcConfig(tables=["a"], key_columns={"public.a": ["x"]})
    assert cfg.key_columns == {"public.a": ["x"]}


def test_outbox_config(load: Callable[..., ServiceConfig]) -> None:
    cfg = OutboxConfig()
    assert (cfg.mode, cfg.table, cfg.topic, cfg.on_publish) == (
        "cdc",
        "eventpipe.outbox",
        "outbox.event.{aggregatetype}",
        "delete",
    )
    cdc = cfg.cdc_config()
    assert cdc.tables == ["eventpipe.outbox"] and cdc.snapshot == "never"
    with pytest.raises(ValueError, match="on_publish: delete or mark"):
        OutboxConfig(mode="poll", on_publish="keep")
    with pytest.raises(ValueError, match="aggregatetype"):
        OutboxConfig(topic="{aggregate}")
    s = load({"type": "outbox", "name": "ob", "mode": "poll", "table": "app.outbox"})
    assert isinstance(s.sources[0], OutboxEntry) and s.sources[0].mode == "poll"
