"""The ``pipeline`` plugin: one service component per configured pipeline.

Schemas named by ``subject`` (``validate_input``, ``validate_output``,
``validate`` steps) are fetched when the pipeline starts: from the pipeline's
``schema_registry`` URL when set, else from eventpipe's own registry (in the
service's database).  An unreachable registry at start is the caller's to retry.

Schemas change without restarts, as a Kafka Connect user expects of a connector
and a converter:

- A subject that is not registered yet does not refuse the service: the
  pipeline starts in state ``waiting`` (its status and ``/readyz`` name the
  subject), looks it up again every :data:`SUBJECT_POLL_S` seconds (or
  ``schema_refresh``, when shorter), and starts its runtime when every subject is
  there.  Events sent meanwhile wait in the source topic.  The start-time check
  (:func:`check_pipeline_start`) warns about it instead of counting it a problem.
- A subject pinned to ``latest`` is looked up again every ``schema_refresh``; a
  new version rebuilds the validate steps and swaps them into the running batch
  processor (:meth:`PipelineComponent._apply`).  The faust app keeps running: a
  restart would leave the consumer group and rebalance every worker of it, and
  rebuild the tables from their changelogs, for what is a change of one compiled
  validator.  The swap is atomic for batches: everything from decoding to
  ``validate_output`` runs without an await, so a batch is checked under the
  old schemas or under the new ones, never both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar, TypeVar

from eventpipe.context import Context
from eventpipe.errors import ConfigError, EventpipeError, is_retriable
from eventpipe.loop import cancel
from eventpipe.plugin import Component, Kind, Plugin
from eventpipe.preflight import Problem, Reach
from eventpipe.schema_registry.lookup import (
    SubjectMissingError,
    fetch_registered,
    subject_problems,
    where_of,
)
from eventpipe.schema_registry.models import RegisteredSchema
from eventpipe.status import Activity, ComponentStatus
from eventpipe.transforms import Chain
from eventpipe.transforms.base import SchemaResolver

from .runtime import PipelineRuntime
from .spec import PipelineSpec, SinkCatalog, build_segments, build_sinks, build_validate
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


T = TypeVar("T")
SUBJECT_POLL_S = 5.0  # a subject not registered yet is looked up this often (at most)
Fetched = dict[tuple[str, Any], RegisteredSchema]  # (subject, pinned version) -> registered


def _registry_of(spec: PipelineSpec, ctx: Context | None) -> bool:
    """Whether the pipeline's subjects can be looked up at all (tests and tools
    without a database and without a registry URL resolve none)."""
    return bool(spec.schema_registry) or (ctx is not None and ctx.pool is not None)


async def _fetch(spec: PipelineSpec, ctx: Context | None, pins: set[tuple[str, Any]]) -> Fetched:
    pool = ctx.pool if ctx is not None else None
    return {
        (subject, version): await fetch_registered(
            subject, version, registry_url=spec.schema_registry, pool=pool
        )
        for subject, version in sorted(pins, key=str)
    }


def resolver(fetched: Fetched) -> SchemaResolver:
    """Resolves the pinned subjects fetched (steps resolve at build, never per event)."""

    def resolve(subject: str, version: Any) -> tuple[str, str]:
        try:
            found = fetched[(subject, version)]
        except KeyError:
            raise LookupError(f"subject {subject!r} version {version} was not fetched") from None
        return found.schema.schema_type, found.schema.schema

    return resolve


async def fetch_schemas(spec: PipelineSpec, ctx: Context | None) -> SchemaResolver | None:
    """A resolver over schemas fetched now; a subject that is not registered raises
    :class:`~eventpipe.schema_registry.lookup.SubjectMissingError`."""
    wanted = subjects_of(spec)
    if not wanted or not _registry_of(spec, ctx):
        return None
    return resolver(await _fetch(spec, ctx, wanted))


async def check_pipeline_start(
    spec: PipelineSpec, reach: Reach, sinks: SinkCatalog
) -> list[Problem]:
    """Start-time checks of one pipeline, paths relative to it: its schema subjects
    can be used (one not registered yet is a warning: the pipeline waits for it)
    and each sink's destination can take its rows (the sink plugin's ``check``)."""
    problems = await subject_problems(
        reach, subject_paths(spec), registry_url=spec.schema_registry, missing="wait"
    )
    entries, _ = build_sinks(list(spec.sinks), path="sinks", sinks=sinks)
    for entry in entries:
        if entry.plugin.check is not None:
            found = await entry.plugin.check(entry.config, reach)
            problems.extend((f"{entry.path}.{p}", m) for p, m in found)
    return problems


class PipelineComponent(Component):
    """One pipeline as a service component; its sinks are its status's children.
    It waits for subjects that are not registered yet, and follows ``latest``
    pins (see the module's docstring)."""

    kind: ClassVar[Kind] = "pipeline"
    type_name: ClassVar[str] = "pipeline"

    def __init__(self, spec: PipelineSpec, ctx: Context) -> None:
        self.spec = spec
        self.ctx = ctx
        self.name = spec.name
        self.runtime: PipelineRuntime | None = None
        self._stopped = False
        self._pins = subject_paths(spec)  # (path, subject, version)
        self._schemas: Fetched = {}  # what the running steps were built with
        self._waiting_for: list[tuple[str, str, Any]] = []  # pins not registered yet
        self._schema_task: asyncio.Task[None] | None = None
        self._starting: PipelineRuntime | None = None
        self._notes = Activity()  # errors met while no runtime counts them
        self._refresh_s = float(spec.schema_refresh or 0)

    @classmethod
    def build(cls, spec: PipelineSpec, name: str, ctx: Context) -> PipelineComponent:
        return cls(spec, ctx)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._stopped = False
        fetched = await self._lookup()  # an unreachable registry: the caller retries
        if self._waiting_for:
            log.warning("pipeline %s waits for %s", self.name, self._waiting_text())
            self._schema_task = asyncio.create_task(
                self._wait_then_run(), name=f"pipeline {self.name}: schemas"
            )
            return
        await self._run(fetched)
        if self._latest_pins():
            self._schema_task = asyncio.create_task(
                self._follow_latest(), name=f"pipeline {self.name}: schemas"
            )

    async def stop(self) -> None:
        self._stopped = True
        task, self._schema_task = self._schema_task, None
        await cancel(task)
        runtime = self.runtime
        if runtime is not None:
            await runtime.stop()

    async def _run(self, fetched: Fetched | None) -> None:
        self._schemas = fetched or {}
        runtime = PipelineRuntime(
            self.spec,
            self.ctx,
            resolve_schema=None if fetched is None else resolver(fetched),
            on_failure=self.report_failure,
        )
        self._starting = runtime  # its consumer is not there to ask until it started
        self.runtime = runtime
        try:
            await runtime.start()
        finally:
            self._starting = None

    # -------------------------------------------------------------- schemas
    async def _lookup(self) -> Fetched | None:
        """Every pinned subject, as registered now (None when the pipeline has no
        registry to ask); the pins not registered yet are left in ``_waiting_for``."""
        if not self._pins or not _registry_of(self.spec, self.ctx):
            self._waiting_for = []
            return None
        fetched: Fetched = {}
        missing: list[tuple[str, str, Any]] = []
        for path, subject, version in self._pins:
            key = (subject, version)
            if key in fetched or any(key == (s, v) for _, s, v in missing):
                continue
            try:
                fetched.update(await _fetch(self.spec, self.ctx, {key}))
            except SubjectMissingError:
                missing.append((path, subject, version))
        self._waiting_for = missing
        return fetched

    def _poll_s(self) -> float:
        return min(SUBJECT_POLL_S, self._refresh_s) if self._refresh_s > 0 else SUBJECT_POLL_S

    def _latest_pins(self) -> list[tuple[str, Any]]:
        if self._refresh_s <= 0:
            return []
        return [key for key in self._schemas if key[1] == "latest"]

    async def _wait_then_run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._poll_s())
                fetched = await self._retrying(self._lookup())
                if fetched is None or self._waiting_for:
                    continue
                log.info("pipeline %s: every subject is registered; starting", self.name)
                await self._run(fetched)
                break
            await self._follow_latest()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the runtime did not start, or a bug: stop loudly
            if not self._stopped:
                self._notes.failed(exc)
                self.report_failure(exc)

    async def _follow_latest(self) -> None:
        """Look the ``latest`` pins up every ``schema_refresh`` and apply new versions."""
        try:
            while self._latest_pins():
                await asyncio.sleep(self._refresh_s)
                pins = set(self._latest_pins())
                found = await self._retrying(_fetch(self.spec, self.ctx, pins))
                if found is None:
                    continue
                changed = {k: r for k, r in found.items() if r.id != self._schemas[k].id}
                if changed:
                    await self._retrying(self._apply({**self._schemas, **changed}))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not a registry's or a schema's error: a bug
            if not self._stopped:
                self.report_failure(exc)

    async def _retrying(self, look: Awaitable[T]) -> T | None:
        """``await look``; None when the registry failed in a way that the next
        look may not: a retriable error, a subject deleted since (the pipeline keeps
        what it has), a schema that does not build (kept out).  Errors that are not
        classified are raised."""
        try:
            return await look
        except Exception as exc:
            if not isinstance(exc, EventpipeError) and not is_retriable(exc):
                raise
            self._note(exc)
            return None

    def _note(self, exc: BaseException) -> None:
        rt = self.runtime
        activity = rt.processor.activity if rt is not None and rt.processor else self._notes
        activity.failed(exc)
        log.warning("pipeline %s: schema lookup: %s", self.name, exc)

    async def _apply(self, fetched: Fetched) -> None:
        """Rebuild the steps and validations with ``fetched`` and swap them into the
        running processor (between two batches: see the module's docstring)."""
        rt = self.runtime
        processor = rt.processor if rt is not None else None
        if rt is None or processor is None:
            return
        spec, resolve = self.spec, resolver(fetched)
        segments, problems = build_segments(spec.steps, path="steps", resolve_schema=resolve)
        v_in, p_in = build_validate(
            spec.validate_input, path="validate_input", resolve_schema=resolve
        )
        v_out, p_out = build_validate(
            spec.validate_output, path="validate_output", resolve_schema=resolve
        )
        problems = problems + p_in + p_out
        if problems:
            raise ConfigError([(f"pipeline {self.name}: {p}", m) for p, m in problems])
        chains = [seg for seg in segments if isinstance(seg, Chain)]
        stages = [stage for stage in processor.stages if stage.chain is not None]
        for stage, chain in zip(stages, chains, strict=True):
            stage.chain = chain
        processor.validate_input, processor.validate_output = v_in, v_out
        rt.resolve_schema = resolve
        old = {k: r.version for k, r in self._schemas.items()}
        self._schemas = fetched
        log.info(
            "pipeline %s applies %s",
            self.name,
            ", ".join(
                f"{s!r} version {r.version} (was {old.get((s, v))})"
                for (s, v), r in fetched.items()
                if old.get((s, v)) != r.version
            ),
        )

    def _waiting_text(self) -> str:
        where = where_of(self.spec.schema_registry)
        subjects = ", ".join(f"subject {s!r} (version {v})" for _, s, v in self._waiting_for)
        return f"{subjects} in {where}"

    def _schema_details(self) -> list[dict[str, Any]]:
        return [
            {"subject": s, "pinned": v, "version": r.version, "id": r.id}
            for (s, v), r in self._schemas.items()
        ]

    # --------------------------------------------------------------- status
    def health(self) -> str:
        if self._waiting_for and self.runtime is None and not self._stopped:
            return f"waiting for {self._waiting_text()}"
        return super().health()

    def status(self) -> ComponentStatus:
        rt = self.runtime
        if rt is None and self._waiting_for and not self._stopped:
            return self._notes.status(
                name=self.name,
                kind=self.kind,
                type=self.type_name,
                state="waiting",
                details={
                    "waiting_for": [
                        {"path": p, "subject": s, "version": v} for p, s, v in self._waiting_for
                    ],
                    "schemas": self._schema_details(),
                },
            )
        if rt is None or rt.processor is None or rt is self._starting:
            st = self._notes.status(
                name=self.name,
                kind=self.kind,
                type=self.type_name,
                state="stopped" if self._stopped or rt is None else "starting",
            )
        else:
            st = pipeline_status(rt, stopped=self._stopped)
        if self._pins:
            st.details["schemas"] = self._schema_details()
        return st


PLUGIN = Plugin(
    "pipeline",
    "pipeline",
    PipelineSpec,
    PipelineComponent.build,
    "consumes topics, runs steps (jq, filter, route, validate, aggregate, dedup) and "
    "delivers to sinks with exactly-once effect",
    example="""\
- name: orders-enriched
  source: {topics: [shop.public.orders], group: orders-enriched, partitions: 3}
  validate_input: {subject: shop.public.orders-value}     # or {schema: {...}} inline
  steps:
    - jq: '{id: .after.id, total: .after.total, customer: .after.customer_id}'
    - filter: '.data.total > 0'
  validate_output: {schema: {type: object, required: [id]}}
  sinks:
    - postgres: {table: orders, mode: upsert, key: [id],
                 columns: {id: .data.id, total: .data.total, updated_at: .time},
                 order_by: updated_at}
    - topic: {topic: orders.enriched}
  state: {dedup_window: 24h}
  retry: {max_attempts: 5, backoff: exponential, initial: 200ms, max: 30s, jitter: true}
  dead_letter: {topic: orders-enriched.dlq}
  errors: {tolerance: none}              # all: dead-letter a batch a sink failed on a bug
  batch: {max_records: 1000}             # within: 5ms holds a batch open at least that long
  processing_guarantee: at_least_once    # exactly_once needs a broker with transactions
  schema_refresh: 30s                    # look `latest` subjects up again (0: never)
""",
)
