"""The pipeline spec: the ``pipelines:`` section of the service config.

An example is ``component.PLUGIN``'s ``example`` (shown in
docs/reference.md#pipelines with every key, and loaded by
tests/unit/test_reference.py).

:func:`validate_pipelines` (called by the service's config loader with the sink
catalog) reports every problem of every pipeline at config load with its path
(``pipelines[0].steps[2].jq: ...``).  Steps are built (jq compiled, schemas
checked) then, so a bad program never waits for the first event.  Schemas
named by ``subject`` are resolved when the pipeline starts, and ``latest`` pins
again every ``schema_refresh`` (:mod:`eventpipe.pipelines.component`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eventpipe.config_keys import did_you_mean
from eventpipe.durations import Duration
from eventpipe.errors import ConfigError
from eventpipe.settings import problems_from
from eventpipe.sink import SinkPlugin
from eventpipe.topics import TopicName
from eventpipe.transforms import Chain, StepContext, ValidateStep
from eventpipe.transforms.base import SchemaResolver, build_step
from eventpipe.transforms.validate import PLUGIN as VALIDATE

STATEFUL_STEPS = ("aggregate", "dedup")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(SpecModel):
    """The topics a pipeline consumes."""

    topics: list[TopicName] = Field(min_length=1, description="the topics consumed")
    group: str | None = Field(None, description="consumer group; default: the pipeline name")
    partitions: int | None = Field(None, ge=1, description="when the pipeline creates them")
    start_from: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new consumer group starts"
    )
    session_timeout: Duration = Field(
        10.0, description="a worker that stops heartbeating leaves the group after this"
    )
    on_topic_reset: Literal["fail", "reset"] | None = Field(
        None,
        description="a source topic created again since the sinks' marks were written: "
        "fail stops the pipeline, reset drops the marks; default: kafka.on_topic_reset",
    )

    @field_validator("topics")
    @classmethod
    def _topics(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a topic is listed twice")
        return v


class StateSpec(SpecModel):
    dedup_window: Duration | None = Field(
        900.0,
        description="skip an event whose (source, id) was processed within this window; "
        "0 or null turns dedup off",
    )


class RetrySpec(SpecModel):
    """How a record whose step or sink failed with a retriable error is tried again."""

    max_attempts: int = Field(
        5,
        ge=1,
        description="tries of a record before it is dead-lettered; waiting for a sink that "
        "is down uses none",
    )
    backoff: Literal["exponential", "constant"] = Field(
        "exponential", description="how the wait grows between tries"
    )
    initial: Duration = Field(0.2, description="the first wait")
    max: Duration = Field(
        30.0, description="the longest wait between two tries, a server's Retry-After included"
    )
    jitter: bool = Field(True, description="randomise each wait, so workers do not retry in step")


class DeadLetterSpec(SpecModel):
    topic: TopicName | None = Field(None, description="default: <pipeline>.dlq")
    partitions: int | None = Field(
        None, ge=1, description="when the pipeline creates it; default kafka.default_partitions"
    )


class ErrorsSpec(SpecModel):
    tolerance: Literal["none", "all"] = Field(
        "none",
        description="a sink failing a whole batch, or one record, with an error that is not "
        "classified as a bad record: none stops the pipeline (exit 3, nothing acknowledged), "
        "all dead-letters the batch or the record (Kafka Connect's errors.tolerance)",
    )


class BatchSpec(SpecModel):
    """How records are gathered into the batches steps and sinks see."""

    max_records: int = Field(1000, ge=1, le=100_000, description="most records in a batch")
    within: Duration = Field(
        0.0,
        ge=0,
        description="a batch waits at least this long after its first record for more "
        "(a linger, as Kafka's linger.ms); 0: a batch is what arrived while the one "
        "before was processed, up to max_records",
    )


class PipelineSpec(SpecModel):
    name: str = Field(
        description="unique; letters, digits, '.', '_', '-' (it names the group and topics)"
    )
    source: SourceSpec = Field(description="the topics consumed")
    validate_input: Any = Field(
        None,
        description="a validate step's config, run before the steps: failures are dead "
        "letters of stage validate",
    )
    steps: list[Any] = Field(
        default_factory=list, description="the steps, in order: each {<type>: <config>}"
    )
    validate_output: Any = Field(
        None, description="a validate step's config, run on what the steps give the sinks"
    )
    sinks: list[Any] = Field(
        min_length=1, description="where the events go: each {<type>: <config>}, all of them"
    )
    state: StateSpec = Field(default_factory=StateSpec, description="the pipeline's own state")
    retry: RetrySpec = Field(default_factory=RetrySpec, description="retries of a failed record")
    dead_letter: DeadLetterSpec = Field(
        default_factory=DeadLetterSpec, description="where failed records go"
    )
    errors: ErrorsSpec = Field(
        default_factory=ErrorsSpec, description="what a failure no record explains does"
    )
    batch: BatchSpec = Field(default_factory=BatchSpec, description="batching")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="exactly_once: Kafka transactions for topic output (needs a broker with "
        "them); database sinks are exactly-once either way",
    )
    schema_registry: str | None = Field(
        None, description="URL of a Confluent-compatible registry; default: eventpipe's own"
    )
    schema_refresh: Duration | None = Field(
        30.0,
        description="how often subjects pinned to `latest` are looked up again: a new "
        "version is applied to the running pipeline (its validate steps are rebuilt between "
        "two batches, nothing restarts); 0 or null: never.  A subject that is not registered "
        "yet is looked up every 5 s (or this, when shorter) while the pipeline waits for it",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '.', '_' and '-' (it names topics and groups)")
        return v

    @property
    def group(self) -> str:
        return self.source.group or self.name

    @property
    def dlq_topic(self) -> str:
        return self.dead_letter.topic or f"{self.name}.dlq"


# ------------------------------------------------------------------- building
SinkCatalog: TypeAlias = Mapping[str, SinkPlugin[Any]]
"""The sinks a pipeline may name, by type (the service's catalog hands it in)."""


@dataclass
class SinkEntry:
    kind: str
    name: str
    config: Any
    path: str
    plugin: SinkPlugin[Any]


@dataclass
class StatefulEntry:
    kind: str  # aggregate | dedup
    config: Any
    path: str


Segment: TypeAlias = Chain | StatefulEntry


def _offset_paths(exc: ConfigError, prefix: str, offset: int) -> list[tuple[str, str]]:
    """Problems of a chain built from a slice of ``steps``: renumber ``steps[k]``."""
    out = []
    pat = re.compile(re.escape(prefix) + r"\[(\d+)\]")
    for path, msg in exc.problems:
        out.append((pat.sub(lambda m: f"{prefix}[{int(m.group(1)) + offset}]", path, 1), msg))
    return out


def stateful_step_configs() -> dict[str, type[BaseModel]]:
    """The config model of each step that keeps state (``STATEFUL_STEPS``): they run
    in the pipeline itself, not in a chain of the transforms catalog."""
    from .aggregate import AggregateConfig
    from .dedup_table import DedupStepConfig

    return {"aggregate": AggregateConfig, "dedup": DedupStepConfig}


def build_segments(
    steps: list[Any], *, path: str, resolve_schema: SchemaResolver | None
) -> tuple[list[Segment], list[tuple[str, str]]]:
    """Runs of stateless steps become Chains (fused); ``aggregate`` / ``dedup`` stand alone."""
    configs = stateful_step_configs()
    problems: list[tuple[str, str]] = []
    segments: list[Segment] = []
    run: list[Any] = []
    run_start = 0

    def flush(end: int) -> None:
        nonlocal run
        if run:
            try:
                segments.append(Chain(run, resolve_schema=resolve_schema, path=path))
            except ConfigError as exc:
                problems.extend(_offset_paths(exc, path, run_start))
        run = []

    for i, item in enumerate(steps):
        kind = next(iter(item)) if isinstance(item, Mapping) and len(item) == 1 else None
        if kind in STATEFUL_STEPS:
            flush(i)
            where = f"{path}[{i}].{kind}"
            model = configs[str(kind)]
            try:
                cfg = model.model_validate(item[kind] or {})
            except ValidationError as exc:
                problems.extend(problems_from(exc, where, model))
            else:
                segments.append(StatefulEntry(str(kind), cfg, where))
            run_start = i + 1
        else:
            if not run:
                run_start = i
            run.append(item)
    flush(len(steps))
    return segments, problems


def build_validate(
    raw: Any, *, path: str, resolve_schema: SchemaResolver | None
) -> tuple[ValidateStep | None, list[tuple[str, str]]]:
    if raw is None:
        return None, []
    step, problems = build_step(
        VALIDATE, raw, path=path, name=path, context=StepContext(resolve_schema=resolve_schema)
    )
    assert step is None or isinstance(step, ValidateStep)
    return step, problems


def build_sinks(
    raw: Sequence[Any], *, path: str, sinks: SinkCatalog
) -> tuple[list[SinkEntry], list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    out: list[SinkEntry] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(item, Mapping) or len(item) != 1:
            problems.append(
                (where, "each sink is a mapping with one key, its type: {postgres: {...}}")
            )
            continue
        ((kind, cfg),) = item.items()
        plugin = sinks.get(kind)
        if plugin is None:
            known = sorted(sinks)
            problems.append(
                (
                    where,
                    f"unknown sink {kind!r}{did_you_mean(kind, known)} (known: {', '.join(known)})",
                )
            )
            continue
        cfg = dict(cfg or {})
        name = cfg.pop("name", None)
        if name is None:
            name = kind if kind not in names else f"{kind}-{i}"
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append((f"{where}.{kind}.name", "letters, digits, '.', '_' and '-'"))
            continue
        if name in names:
            problems.append((f"{where}.{kind}.name", f"sink name {name!r} is used twice"))
            continue
        names.add(name)
        model = plugin.config
        try:
            config = model.model_validate(cfg)
        except ValidationError as exc:
            problems.extend(problems_from(exc, f"{where}.{kind}", model, also=("name",)))
            continue
        out.append(SinkEntry(kind, name, config, f"{where}.{kind}", plugin))
    return out, problems


def sink_problems(entries: list[SinkEntry], steps: Any) -> list[tuple[str, str]]:
    """Each sink's load-time problems within its pipeline (a topic sink needs a
    topic or a ``route`` step before it)."""
    routed = isinstance(steps, list) and any(
        isinstance(item, Mapping) and "route" in item for item in steps
    )
    problems: list[tuple[str, str]] = []
    for e in entries:
        if e.plugin.pipeline_problems is not None:
            found = e.plugin.pipeline_problems(e.config, routed=routed)
            problems.extend((f"{e.path}.{p}", m) for p, m in found)
    return problems


def _permissive_resolver(subject: str, version: Any) -> tuple[str, str]:
    """At config load subjects are only checked for form; they resolve at start."""
    return "JSON", "true"


def check_pipeline(
    raw: Any, where: str, sinks: SinkCatalog
) -> tuple[PipelineSpec | None, list[tuple[str, str]]]:
    """Every problem of one pipeline entry, each with its path."""
    if not isinstance(raw, Mapping):
        return None, [(where, "each pipeline is a mapping (name, source, steps, sinks, ...)")]
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        problems = problems_from(exc, where, PipelineSpec)
        # Still check steps and sinks, so every problem is reported at once.
        if isinstance(raw.get("steps"), list):
            problems.extend(
                build_segments(
                    raw["steps"], path=f"{where}.steps", resolve_schema=_permissive_resolver
                )[1]
            )
        if isinstance(raw.get("sinks"), list):
            entries, found = build_sinks(raw["sinks"], path=f"{where}.sinks", sinks=sinks)
            problems.extend(found + sink_problems(entries, raw.get("steps")))
        return None, problems
    problems = []
    problems.extend(
        build_segments(spec.steps, path=f"{where}.steps", resolve_schema=_permissive_resolver)[1]
    )
    for field in ("validate_input", "validate_output"):
        problems.extend(
            build_validate(
                getattr(spec, field), path=f"{where}.{field}", resolve_schema=_permissive_resolver
            )[1]
        )
    entries, found = build_sinks(spec.sinks, path=f"{where}.sinks", sinks=sinks)
    problems.extend(found + sink_problems(entries, spec.steps))
    if spec.dlq_topic in spec.source.topics:
        problems.append(
            (f"{where}.dead_letter.topic", "must differ from the source topics (it would loop)")
        )
    if spec.retry.initial > spec.retry.max:
        problems.append((f"{where}.retry.initial", "must not exceed retry.max"))
    return spec, problems


def _tidy(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(p.replace(".(root)", ""), m.removeprefix("Value error, ")) for p, m in problems]


def validate_pipelines(pipelines: Sequence[Any], sinks: SinkCatalog) -> list[tuple[str, str]]:
    """Every problem of the ``pipelines:`` section, each with its path."""
    problems: list[tuple[str, str]] = []
    names: dict[str, int] = {}
    groups: dict[str, int] = {}
    for i, raw in enumerate(pipelines):
        where = f"pipelines[{i}]"
        spec, found = check_pipeline(raw, where, sinks)
        problems.extend(_tidy(found))
        if spec is None:
            continue
        if spec.name in names:
            problems.append(
                (
                    f"{where}.name",
                    f"pipeline name {spec.name!r} is also pipelines[{names[spec.name]}]",
                )
            )
        names.setdefault(spec.name, i)
        if spec.group in groups:
            problems.append(
                (
                    f"{where}.source.group",
                    f"group {spec.group!r} is also used by "
                    f"pipelines[{groups[spec.group]}]; each pipeline needs its own consumer group",
                )
            )
        groups.setdefault(spec.group, i)
    return problems


def parse_pipelines(pipelines: Sequence[Any], sinks: SinkCatalog) -> list[PipelineSpec]:
    """The validated specs (the config loader already reported problems)."""
    out = []
    for i, raw in enumerate(pipelines):
        spec, problems = check_pipeline(raw, f"pipelines[{i}]", sinks)
        if problems or spec is None:
            raise ConfigError(problems)
        out.append(spec)
    return out


SchemaResolverFactory = Callable[[PipelineSpec], SchemaResolver | None]
