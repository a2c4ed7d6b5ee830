"""The ``pipelines`` role: one service Component per configured pipeline.

Schemas named by ``subject`` (``validate_input``, ``validate_output``,
``validate`` steps) are fetched when the pipeline starts: from the pipeline's
``schema_registry`` URL when set, else from eventpipe's own registry (in the
service's database).  An unknown subject is found before anything starts, with
every other start-time problem (:func:`check_pipelines`, run by the service
through :mod:`eventpipe.preflight`); an unreachable registry is retried by the
caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from eventpipe.context import Context
from eventpipe.preflight import Problem, Reach, register_check
from eventpipe.schema_registry.lookup import fetch_subject, subject_problems
from eventpipe.service.runner import COMPONENT_FACTORIES, Component
from eventpipe.transforms.base import SchemaResolver

from .runtime import PipelineRuntime
from .spec import PipelineSpec, build_sinks, check_pipeline, parse_pipelines

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


async def check_pipelines(reach: Reach) -> list[Problem]:
    """Start-time checks of every pipeline: its schema subjects are registered and
    each sink's destination can take its rows (``Sink.preflight``)."""
    from eventpipe.base import sinks as registry

    problems: list[Problem] = []
    for i, raw in enumerate(reach.settings.pipelines):
        where = f"pipelines[{i}]"
        spec, _ = check_pipeline(raw, where)  # load-time problems are reported at load
        if spec is None:
            continue
        problems.extend(
            await subject_problems(
                reach, subject_paths(spec, where), registry_url=spec.schema_registry
            )
        )
        entries, _ = build_sinks(list(spec.sinks), path=f"{where}.sinks")
        for entry in entries:
            found = await registry.get(entry.kind).preflight(entry.config, reach)
            problems.extend((f"{entry.path}.{p}", m) for p, m in found)
    return problems


class PipelineComponent(Component):
    def __init__(self, spec: PipelineSpec, ctx: Context) -> None:
        self.spec = spec
        self.ctx = ctx
        self.name = f"pipeline {spec.name}"
        self.runtime: PipelineRuntime | None = None

    async def start(self) -> None:
        ctx = self.ctx
        resolve = await fetch_schemas(self.spec, ctx)
        self.runtime = PipelineRuntime(
            self.spec, ctx, resolve_schema=resolve, on_failure=self.report_failure
        )
        await self.runtime.start()

    async def stop(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            await runtime.stop()


def pipeline_components(ctx: Context) -> list[Component]:
    return [PipelineComponent(spec, ctx) for spec in parse_pipelines(ctx.settings)]


if pipeline_components not in COMPONENT_FACTORIES["pipelines"]:
    COMPONENT_FACTORIES["pipelines"].append(pipeline_components)
register_check("pipelines", check_pipelines)
