"""The ``pipeline`` plugin: one service component per configured pipeline.

Schemas named by ``subject`` (``validate_input``, ``validate_output``,
``validate`` steps) are fetched when the pipeline starts: from the pipeline's
``schema_registry`` URL when set, else from eventpipe's own registry (in the
service's database).  An unknown subject is found before anything starts, with
every other start-time problem (:func:`check_pipeline_start`, run by the service
before anything starts); an unreachable registry is retried by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from eventpipe.context import Context
from eventpipe.plugin import Component, Kind, Plugin
from eventpipe.preflight import Problem, Reach
from eventpipe.schema_registry.lookup import fetch_subject, subject_problems
from eventpipe.status import ComponentStatus
from eventpipe.transforms.base import SchemaResolver

from .runtime import PipelineRuntime
from .spec import PipelineSpec, SinkCatalog, build_sinks
from .status import pipeline_status

log = logging.getLogger("eventpipe.pipelines")


def subject_paths(spec: PipelineSpec, where: str = "") -> list[tuple[str, str, Any]]:
    """Every ``(path, subject, version)`` the pipeline validates against."""
    found: list[tuple[str, str, Any]] = []
    prefix = f"{where}." if where else ""

    def visit(raw: Any, path: str) -> None:
        if isinstance(raw, str):
            found.append((path, raw, "latest"))
        elif isinstance(raw, Mapping) and isinstance(raw.get("subject"), str):
            found.append((f"{path}.subject", raw["subject"], raw.get("version", "latest")))

    visit(spec.validate_input, f"{prefix}validate_input")
    visit(spec.validate_output, f"{prefix}validate_output")
    for k, item in enumerate(spec.steps):
        if isinstance(item, Mapping) and "validate" in item:
            visit(item["validate"], f"{prefix}steps[{k}].validate")
    return found


def subjects_of(spec: PipelineSpec) -> set[tuple[str, Any]]:
    """Every (subject, version) the pipeline validates against."""
    return {(subject, version) for _, subject, version in subject_paths(spec)}


async def fetch_schemas(spec: PipelineSpec, ctx: Context | None) -> SchemaResolver | None:
    """A resolver over schemas fetched now (steps resolve at build, never per event)."""
    wanted = subjects_of(spec)
    if not wanted:
        return None
    pool = ctx.pool if ctx is not None else None
    if not spec.schema_registry and pool is None:
        return None
    fetched: dict[tuple[str, Any], tuple[str, str]] = {}
    for subject, version in wanted:
        fetched[(subject, version)] = await fetch_subject(
            subject, version, registry_url=spec.schema_registry, pool=pool
        )

    def resolve(subject: str, version: Any) -> tuple[str, str]:
        try:
            return fetched[(subject, version)]
        except KeyError:
            raise LookupError(f"subject {subject!r} version {version} was not fetched") from None

    return resolve


async def check_pipeline_start(
    spec: PipelineSpec, reach: Reach, sinks: SinkCatalog
) -> list[Problem]:
    """Start-time checks of one pipeline, paths relative to it: its schema subjects
    are registered and each sink's destination can take its rows (the sink
    plugin's ``check``)."""
    problems = await subject_problems(reach, subject_paths(spec), registry_url=spec.schema_registry)
    entries, _ = build_sinks(list(spec.sinks), path="sinks", sinks=sinks)
    for entry in entries:
        if entry.plugin.check is not None:
            found = await entry.plugin.check(entry.config, reach)
            problems.extend((f"{entry.path}.{p}", m) for p, m in found)
    return problems


class PipelineComponent(Component):
    """One pipeline as a service component; its sinks are its status's children."""

    kind: ClassVar[Kind] = "pipeline"
    type_name: ClassVar[str] = "pipeline"

    def __init__(self, spec: PipelineSpec, ctx: Context) -> None:
        self.spec = spec
        self.ctx = ctx
        self.name = spec.name
        self.runtime: PipelineRuntime | None = None
        self._stopped = False

    @classmethod
    def build(cls, spec: PipelineSpec, name: str, ctx: Context) -> PipelineComponent:
        return cls(spec, ctx)

    async def start(self) -> None:
        ctx = self.ctx
        resolve = await fetch_schemas(self.spec, ctx)
        self.runtime = PipelineRuntime(
            self.spec, ctx, resolve_schema=resolve, on_failure=self.report_failure
        )
        self._stopped = False
        await self.runtime.start()

    async def stop(self) -> None:
        self._stopped = True
        runtime = self.runtime
        if runtime is not None:
            await runtime.stop()

    def status(self) -> ComponentStatus:
        rt = self.runtime
        if rt is None or rt.processor is None:
            return ComponentStatus(
                name=self.name,
                kind=self.kind,
                type=self.type_name,
                state="stopped" if self._stopped or rt is None else "starting",
            )
        return pipeline_status(rt, stopped=self._stopped)


PLUGIN = Plugin(
    "pipeline",
    "pipeline",
    PipelineSpec,
    PipelineComponent.build,
    "consumes topics, runs steps (jq, filter, route, validate, aggregate, dedup) and "
    "delivers to sinks with exactly-once effect",
)
