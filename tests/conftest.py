from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from psycopg_pool import AsyncConnectionPool

from eventpipe.kafka.admin import TopicAdmin
from eventpipe.settings import Settings, load_settings
from tests.fixtures.stack import StackInfo, start_test_stack


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/integration and tests/browser is an integration test.
    for item in items:
        if "/integration/" in str(item.fspath) or "/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, every finished span kept in memory (the SDK's
    exporter); off again afterwards."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from eventpipe import telemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.install(provider)
    try:
        yield exporter
    finally:
        telemetry.shutdown()


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    with start_test_stack() as s:
        yield s


@pytest.fixture
def settings(stack: StackInfo) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "kafka": {"bootstrap": stack.bootstrap, "linger_ms": 1},
            "database": {"url": stack.database_url, "pool_max": 4},
            "service": {"port": 0, "publish_timeout_s": 10},
        },
    )


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[AsyncConnectionPool]:
    """A connection pool on the test database (closed after the test)."""
    from eventpipe.db.pool import open_pool

    p = await open_pool(settings.database)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"t-{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def topic(settings: Settings, topic_name: str) -> AsyncIterator[str]:
    """A fresh 3-partition topic per test."""
    from eventpipe.settings import TopicSpec

    async with TopicAdmin(settings.kafka) as admin:
        await admin.ensure_topics([TopicSpec(name=topic_name, partitions=3)])
    yield topic_name
