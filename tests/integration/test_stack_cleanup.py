"""The embedded stacks tests and benchmarks start leave nothing behind: each left
its PostgreSQL data directory in /tmp (50-100 MB a test session and xdist worker,
up to 2 GB a 1M-event benchmark), and repeated runs filled this machine's disk."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from bench.common import bench_stack
from tests.fixtures.stack import start_test_stack


@pytest.fixture
def no_external(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded services, even where EVENTPIPE_* name external ones."""
    monkeypatch.delenv("EVENTPIPE_DATABASE_URL", raising=False)
    monkeypatch.delenv("EVENTPIPE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("EVENTPIPE_TEST_NO_DOCKER", "1")


def _used(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table t (n int)")
        conn.execute("insert into t select generate_series(1, 1000)")


def test_the_test_stack_removes_its_files(no_external: None) -> None:
    with start_test_stack() as stack:
        data = stack.data_dir
        assert data is not None and any(data.iterdir())
        _used(stack.database_url)
    assert not data.exists()


def test_the_bench_stack_removes_its_files(no_external: None) -> None:
    with bench_stack() as stack:
        data = Path(stack.data_dir)
        assert any(data.iterdir())
        _used(stack.database_url)
    assert not data.exists()
