"""Backfill arguments: every problem is a clear error naming its flag, raised
before anything connects (the CLI is run against addresses nothing listens on)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventpipe.backfill.options import (
    BackfillArgumentError,
    BackfillRequest,
    check_pipeline_for,
    check_request,
    find_pipeline,
    parse_rate,
)
from eventpipe.cli.main import main
from eventpipe.service.catalog import CATALOG
from eventpipe.settings import load_settings

SINKS = CATALOG.sinks

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PIPELINE = {
    "name": "orders",
    "source": {"topics": ["shop.orders"]},
    "steps": [{"jq": "{id: .order_id}"}],
    "sinks": [{"topic": {"topic": "orders.out"}}],
}


def req(**kw: Any) -> BackfillRequest:
    args: dict[str, Any] = {"pipeline": "orders", "start": "2h", "end": "1h", "now": NOW}
    args.update(kw)
    return check_request(**args)


def flag_of(**kw: object) -> str:
    with pytest.raises(BackfillArgumentError) as info:
        req(**kw)
    return info.value.flag


def test_times_in_every_form() -> None:
    r = req(start="2026-11-20", end="2026-11-21T06:30:00Z")
    assert r.start == datetime(2026, 11, 20, tzinfo=UTC)
    assert r.end == datetime(2026, 11, 21, 6, 30, tzinfo=UTC)
    r = req(start="90m", end="now")
    assert r.start == NOW - timedelta(minutes=90) and r.end == NOW
    assert r.mode == "dry_run" and r.source == "topic" and r.rate is None


def test_bad_times_and_ranges_name_their_flag() -> None:
    assert flag_of(start="yesterday") == "--from"
    assert flag_of(end="2026-13-45") == "--to"
    assert flag_of(start="1h", end="2h") == "--to"  # T2 before T1
    assert flag_of(start="1h", end="1h") == "--to"  # empty range
    assert flag_of(start="2027-01-01", end="2027-02-01") == "--from"  # in the future
    with pytest.raises(BackfillArgumentError, match="is before --from"):
        req(start="2026-11-21", end="2026-11-20")


def test_other_flags() -> None:
    assert flag_of(mode="fast") == "--mode"
    assert flag_of(source="kafka") == "--source"
    assert flag_of(concurrency=0) == "--concurrency"
    assert flag_of(rate="-5") == "--rate"
    assert flag_of(rate="lots") == "--rate"
    assert flag_of(resume="42") == "--resume"
    assert flag_of(pipeline=None) == "--pipeline"
    assert flag_of(start=None) == "--from"
    assert flag_of(time_column="x; drop table y") == "--time-column"
    assert flag_of(tables=["public.orders"]) == "--table"  # only with --source table
    assert flag_of(allow_overwrite=True) == "--allow-overwrite"  # only with --mode live
    assert parse_rate("500/s") == 500.0 and parse_rate("2.5") == 2.5
    # resuming needs neither pipeline nor times
    r = req(pipeline=None, start=None, end=None, resume="bf-0123456789ab")
    assert r.resume == "bf-0123456789ab" and r.start is None


def test_unknown_pipeline_and_aggregate_in_live_mode() -> None:
    agg = {
        **PIPELINE,
        "name": "totals",
        "steps": [{"aggregate": {"op": "count", "window": {"tumbling": "1m"}}}],
    }
    settings = load_settings(environ={}).model_copy(update={"pipelines": [PIPELINE, agg]})
    assert find_pipeline(settings, "orders", SINKS).name == "orders"
    with pytest.raises(BackfillArgumentError, match=r"unknown pipeline 'nope' \(known: orders, "):
        find_pipeline(settings, "nope", SINKS)
    spec = find_pipeline(settings, "totals", SINKS)
    check_pipeline_for(spec, "dry_run", SINKS)
    with pytest.raises(BackfillArgumentError, match="aggregate step"):
        check_pipeline_for(spec, "live", SINKS)


def test_live_mode_needs_an_ordering_column_on_upsert_sinks() -> None:
    sink = {"table": "balances", "mode": "upsert", "key": ["k"]}
    columns = {"k": ".data.k", "at": ".time"}
    guarded = {**PIPELINE, "sinks": [{"postgres": {**sink, "columns": columns, "order_by": "at"}}]}
    unguarded = {
        **PIPELINE,
        "name": "balances",
        "sinks": [
            {"topic": {"topic": "out"}},
            {"outbox": {"aggregate_type": '"b"', "rows": {**sink, "columns": columns}}},
        ],
    }
    settings = load_settings(environ={}).model_copy(update={"pipelines": [guarded, unguarded]})
    check_pipeline_for(find_pipeline(settings, "orders", SINKS), "live", SINKS)
    spec = find_pipeline(settings, "balances", SINKS)
    with pytest.raises(BackfillArgumentError, match=r"upserts into sinks\[1\] \(balances\)"):
        check_pipeline_for(spec, "live", SINKS)
    check_pipeline_for(spec, "live", SINKS, allow_overwrite=True)
    check_pipeline_for(spec, "shadow", SINKS)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Nothing listens here: an argument error must come before any connection.
    monkeypatch.setenv("EVENTPIPE_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("EVENTPIPE_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    path = tmp_path / "eventpipe.yaml"
    path.write_text(yaml.safe_dump({"pipelines": [PIPELINE]}))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--pipeline", "nope", "--from", "2h", "--to", "1h"],
            "--pipeline: unknown pipeline 'nope' (known: orders)",
        ),
        (["--pipeline", "orders", "--from", "1h", "--to", "2h"], "--to: "),
        (
            ["--pipeline", "orders", "--from", "last tuesday", "--to", "1h"],
            "--from: 'last tuesday' is not a time",
        ),
        (
            ["--pipeline", "orders", "--from", "2h", "--to", "1h", "--mode", "fast"],
            "--mode: 'fast' is not one of dry_run, shadow, live",
        ),
        (
            ["--pipeline", "orders", "--from", "2h", "--to", "1h", "--source", "table"],
            "--source: table: no postgres_cdc source",
        ),
    ],
)
def test_cli_reports_bad_arguments_before_connecting(
    config: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["backfill", "-c", str(config), *args])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert message in err


def test_workers_flag() -> None:
    assert req(workers="auto").workers == 0
    assert req(workers="3").workers == 3 and req().workers is None
    assert flag_of(workers="0") == "--workers"
    assert flag_of(workers="many") == "--workers"
