"""The catalog: every built-in plugin, listed here and only here.

The service is the only composition root.  Features expose their plugins as plain
values (each module ends with ``PLUGIN = Plugin(...)``); this module lists them,
and the service hands them on: the sources and sinks through the
:class:`~eventpipe.context.Context` (``ctx.catalog``), so that pipelines and the
backfill build sinks without importing a connector by name.  Steps belong to the
transforms package (:mod:`eventpipe.transforms.catalog`), which pipelines import.

To add a source or a sink: write its module (config model, class, ``PLUGIN``) and
add the value here (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from eventpipe.connectors import kafka_source
from eventpipe.connectors.outbox import relay as outbox_relay
from eventpipe.connectors.postgres_cdc import source as postgres_cdc
from eventpipe.connectors.sinks import http, outbox, postgres, topic
from eventpipe.connectors.webhook import source as webhook
from eventpipe.context import Context
from eventpipe.pipelines import component as pipelines
from eventpipe.pipelines.spec import PipelineSpec
from eventpipe.plugin import Catalog, Component, Plugin, by_type
from eventpipe.sink import SinkPlugin
from eventpipe.transforms.base import StepPlugin
from eventpipe.transforms.catalog import STEPS

Role = Literal["ingest", "pipelines", "cdc"]

SOURCES: tuple[Plugin[Any, Context, Component], ...] = (
    webhook.PLUGIN,
    kafka_source.PLUGIN,
    postgres_cdc.PLUGIN,
    outbox_relay.PLUGIN,
)
SINKS: tuple[SinkPlugin[Any], ...] = (postgres.PLUGIN, http.PLUGIN, topic.PLUGIN, outbox.PLUGIN)
PIPELINE: Plugin[PipelineSpec, Context, Component] = pipelines.PLUGIN

SOURCE_ROLES: Mapping[str, Role] = {
    "webhook": "ingest",
    "kafka": "ingest",
    "postgres_cdc": "cdc",
    "outbox": "cdc",
}
"""Which ``eventpipe run --role`` runs each source type (pipelines run in ``pipelines``)."""

CATALOG = Catalog(sources=by_type(SOURCES), sinks=by_type(SINKS))

__all__ = ["CATALOG", "PIPELINE", "SINKS", "SOURCES", "SOURCE_ROLES", "STEPS", "Role", "StepPlugin"]
