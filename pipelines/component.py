"""The ``pipelines`` role: one service Component per configured pipeline.

Schemas named by ``subject`` (``validate_input``, ``validate_output``,
``validate`` steps) are fetched when the pipeline starts: from the pipeline's
``schema_registry`` URL when set, else from eventpipe's own registry (in the
service's database).  An unknown subject fails the start with a message naming
it; an unreachable registry is retried by the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from eventpipe.connectors.sinks.api import SinkResources
from eventpipe.transforms.base import SchemaResolver

from eventpipe.service.context import ServiceContext
from eventpipe.service.runner import COMPONENT_FACTORIES, Component

from .runtime import PipelineRuntime
from .spec import PipelineSpec, parse_pipelines

log = logging.getLogger("eventpipe.pipelines")


def subjects_of(spec: PipelineSpec) -> set[tuple[str, Any]]:
    """Every (subject, version) the pipeline validates against."""
    found: set[tuple[str, Any]] = set()

    def visit(raw: Any) -> None:
        if isinstance(raw, str):
            found.add((raw, "latest"))
        elif isinstance(raw, Mapping) and isinstance(raw.get("subject"), str):
            found.add((raw["subject"], raw.get("version", "latest")))

    visit(spec.validate_input)
    visit(spec.validate_output)
    for item in spec.steps:
        if isinstance(item, Mapping) and "validate" in item:
            visit(item["validate"])
    return found


async def fetch_schemas(spec: PipelineSpec, ctx: ServiceContext | None) -> SchemaResolver | None:
    """A resolver over schemas fetched now (steps resolve at build, never per event)."""
    wanted = subjects_of(spec)
    if not wanted:
        return None
    fetched: dict[tuple[str, Any], tuple[str, str]] = {}
    if spec.schema_registry:
        from eventpipe.schema_registry.client import schema_resolver

        remote = schema_resolver(spec.schema_registry)
        for subject, version in wanted:
            fetched[(subject, version)] = await asyncio.to_thread(remote, subject, version)
    else:
        from eventpipe.schema_registry.registry import SchemaRegistry

        if ctx is None or ctx.pool is None:
            return None
        registry = SchemaRegistry(ctx.pool)
        for subject, version in wanted:
            reg = await registry.get_version(subject, version, deleted=False)
            fetched[(subject, version)] = (reg.schema.schema_type, reg.schema.schema)

    def resolve(subject: str, version: Any) -> tuple[str, str]:
        try:
            return fetched[(subject, version)]
        except KeyError:
            raise LookupError(f"subject {subject!r} version {version} was not fetched") from None

    return resolve


class PipelineComponent(Component):
    def __init__(self, spec: PipelineSpec, ctx: ServiceContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.name = f"pipeline {spec.name}"
        self.runtime: PipelineRuntime | None = None

    async def start(self) -> None:
        ctx = self.ctx
        resolve = await fetch_schemas(self.spec, ctx)
        resources = SinkResources(ctx.settings, ctx.publisher, ctx.admin, ctx.pool)
        self.runtime = PipelineRuntime(
            self.spec, resources, resolve_schema=resolve, on_failure=self.report_failure
        )
        await self.runtime.start()

    async def stop(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            await runtime.stop()


def pipeline_components(ctx: ServiceContext) -> list[Component]:
    return [PipelineComponent(spec, ctx) for spec in parse_pipelines(ctx.settings)]


if pipeline_components not in COMPONENT_FACTORIES["pipelines"]:
    COMPONENT_FACTORIES["pipelines"].append(pipeline_components)
