"""Which profile serves which plugin, and the plugins the suite runs against: every
source and sink of the built-in catalog (``eventpipe.service.catalog``), and the
"write your own sink" example.

A plugin added to the catalog without a profile here fails the suite (its cases
fail, and tests/unit/test_conformance_profiles.py names it): write a profile in
sink_profiles.py or source_profiles.py (docs/architecture.md) and list it below.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventpipe.context import Context
from eventpipe.plugin import Component, Plugin
from eventpipe.service import catalog
from eventpipe.service.context import open_context
from eventpipe.settings import Settings
from eventpipe.sink import SinkPlugin
from tests.integration.test_pipeline_support import ident
from tests.plugins import example_sink

from .base import Profile, SinkProfile, SourceProfile
from .sink_profiles import (
    AuditRowsProfile,
    HttpProfile,
    OutboxSinkProfile,
    PostgresProfile,
    PostgresUpsertProfile,
    TopicProfile,
)
from .source_profiles import (
    KafkaSourceProfile,
    OutboxPollProfile,
    OutboxProfile,
    PostgresCdcProfile,
    WebhookProfile,
)

SINK_PLUGINS: tuple[SinkPlugin[Any], ...] = (*catalog.SINKS, example_sink.PLUGIN)
SOURCE_PLUGINS: tuple[Plugin[Any, Context, Component], ...] = catalog.SOURCES

CATALOG = dataclasses.replace(
    catalog.CATALOG, sinks={**catalog.CATALOG.sinks, example_sink.PLUGIN.type: example_sink.PLUGIN}
)
"""The built-in catalog and the example sink: what the pipelines of the suite build from."""

SINK_PROFILES: dict[str, tuple[type[SinkProfile], ...]] = {
    "postgres": (PostgresProfile, PostgresUpsertProfile),
    "http": (HttpProfile,),
    "topic": (TopicProfile,),
    "outbox": (OutboxSinkProfile,),
    "audit_rows": (AuditRowsProfile,),
}
SOURCE_PROFILES: dict[str, tuple[type[SourceProfile], ...]] = {
    "webhook": (WebhookProfile,),
    "kafka": (KafkaSourceProfile,),
    "postgres_cdc": (PostgresCdcProfile,),
    "outbox": (OutboxProfile, OutboxPollProfile),
}


def missing(kind: str, plugin_type: str) -> str:
    where = "sink_profiles.py" if kind == "sink" else "source_profiles.py"
    return (
        f"the {kind} plugin {plugin_type!r} has no conformance profile: write one in "
        f"tests/conformance/{where} and list it in tests/conformance/profiles.py "
        "(docs/architecture.md)"
    )


def cases(plugins: tuple[Plugin[Any, Any, Any], ...], profiles: dict[str, Any]) -> list[Any]:
    """One case per (plugin, profile); a plugin without a profile is a case too,
    which fails with :func:`missing`."""
    out: list[Any] = []
    for plugin in plugins:
        found = profiles.get(plugin.type, ())
        out.extend(pytest.param((plugin, p), id=p.case_id()) for p in found)
        if not found:
            out.append(pytest.param((plugin, None), id=plugin.type))
    return out


SINK_CASES = cases(SINK_PLUGINS, SINK_PROFILES)
SOURCE_CASES = cases(SOURCE_PLUGINS, SOURCE_PROFILES)


@contextlib.asynccontextmanager
async def suite_context(profile: Profile) -> AsyncIterator[Context]:
    """A Context opened as the service opens it, with the profile's settings and the
    suite's catalog; closed after."""
    ctx = await open_context(profile.settings(), migrate=False, broker_wait_s=5, catalog=CATALOG)
    try:
        yield ctx
    finally:
        await ctx.close()


@contextlib.asynccontextmanager
async def prepared(
    case: tuple[Plugin[Any, Any, Any], type[Profile] | None], settings: Settings
) -> AsyncIterator[tuple[Any, dict[str, Any], Context]]:
    """A case's profile (named uniquely), what its ``setup`` returned, and a
    :func:`suite_context`; all undone after."""
    plugin, profile_class = case
    if profile_class is None:
        pytest.fail(missing(plugin.kind, plugin.type))
    profile = profile_class(settings, ident("cf"))
    try:
        made = await profile.setup()
        async with suite_context(profile) as ctx:
            yield profile, made, ctx
    finally:
        await profile.teardown()
