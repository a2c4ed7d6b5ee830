"""Typed service configuration: YAML file + ``EVENTPIPE_*`` environment overrides.

Every problem is reported at once with its path (STYLE.md habit 3).  The
environment wins over the file: ``EVENTPIPE_<SECTION>_<FIELD>`` sets
``<section>.<field>`` (``EVENTPIPE_KAFKA_BOOTSTRAP`` -> ``kafka.bootstrap``,
``EVENTPIPE_DATABASE_URL`` -> ``database.url``).  :func:`env_var_names` lists
them all, and compose/ is checked against it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from eventpipe.config_keys import error_message
from eventpipe.durations import Duration
from eventpipe.errors import ConfigError
from eventpipe.topics import TopicName

ENV_PREFIX = "EVENTPIPE_"


WORKERS_HELP = "a number of processes, 1 or more, or `auto` (one per core)"


def parse_workers(value: Any) -> int | Literal["auto"]:
    """``service.workers`` / ``--workers``: a count of 1 or more, or ``auto``;
    ValueError naming what it takes otherwise."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        value = int(text) if text.isdigit() else text
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not {WORKERS_HELP}")
    return value


def worker_count(value: int | Literal["auto"]) -> int:
    """The number of processes ``value`` means: ``auto`` is the number of cores."""
    return (os.cpu_count() or 1) if value == "auto" else value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(Section):
    bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port...]")
    client_id: str = Field(
        "eventpipe", description="client id the broker sees (pipelines add -<name>)"
    )
    acks: Literal["all", 1, 0] = Field(
        "all", description="replicas that must have a record before it counts as written"
    )
    linger_ms: int = Field(
        0,
        ge=0,
        le=10_000,
        description="0 sends at once; records still batch while a request is in flight",
    )
    max_batch_size: int = Field(
        256 * 1024, ge=1024, description="bytes of records the producer batches per partition"
    )
    max_request_size: int = Field(
        1024 * 1024,
        ge=1024,
        description="largest record the producer sends, in bytes; a larger dead letter is "
        "kept in PostgreSQL",
    )
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = Field(
        "none", description="how the producer compresses record batches"
    )
    request_timeout_ms: int = Field(
        15_000, ge=100, description="how long a broker request may take before it is given up"
    )
    metadata_max_age_ms: int = Field(
        30_000, ge=100, description="cluster metadata is refreshed at least this often"
    )
    default_partitions: int = Field(
        3, ge=1, description="partitions of a topic eventpipe creates without a count of its own"
    )
    replication_factor: int = Field(
        1, ge=1, description="replicas of a topic eventpipe creates without a factor of its own"
    )
    auto_create_topics: bool = Field(
        False, description="POST to an unknown topic creates it instead of answering 404"
    )
    on_topic_reset: Literal["fail", "reset"] = Field(
        "fail",
        description="a topic deleted and created again under a name eventpipe kept marks "
        "for (sink offsets, DLQ replay ledger, backfill progress): fail stops with an "
        "error naming it, reset drops the marks and reads the new topic from its "
        "beginning; `eventpipe dev` with its embedded broker uses reset",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how to reach the brokers: TLS, SASL, both or neither"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="required with a SASL_ protocol"
    )
    sasl_username: str | None = Field(None, description="required with a SASL_ protocol")
    sasl_password: SecretStr | None = Field(None, description="required with a SASL_ protocol")
    ssl_cafile: Path | None = Field(None, description="CA bundle; default: the system's")
    ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(
        None, description="the client certificate's private key (mutual TLS)"
    )
    ssl_key_password: SecretStr | None = Field(
        None, description="password of ssl_keyfile, when it has one"
    )
    ssl_check_hostname: bool = Field(
        True, description="check that the broker's certificate names the host connected to"
    )


class DatabaseSettings(Section):
    url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/eventpipe"),
        description="libpq connection URI",
    )
    pool_min: int = Field(1, ge=0, description="connections the pool keeps open")
    pool_max: int = Field(10, ge=1, description="most connections the pool opens")
    connect_timeout_s: float = Field(
        10.0, gt=0, description="how long opening a connection may take"
    )


class ConsoleSettings(Section):
    """The web console at ``/console/`` (eventpipe/console).  Every action that
    changes something (replay, discard) needs a login with ``service.admin_token``."""

    enabled: bool = Field(True, description="serve /console/ (and redirect / to it)")
    public_read: bool = Field(
        False,
        description="pages readable without logging in (actions still need the admin "
        "token); off: every page asks for the login first",
    )
    session_ttl_s: int = Field(
        12 * 3600, ge=60, le=30 * 86400, description="a login lasts this many seconds"
    )


class ServiceSettings(Section):
    host: str = Field("127.0.0.1", description="address the HTTP server binds (0.0.0.0: all)")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port (0: any free port)")
    workers: int | Literal["auto"] = Field(
        1,
        description="processes `eventpipe run` starts under one supervisor: each runs the "
        "role's components and listens on `port` (SO_REUSEPORT); `auto`: one per core; "
        "`--workers` wins over it",
    )
    ops_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="with workers > 1, where the supervisor serves /healthz, /readyz, "
        "/metrics and /v1/status of all workers together (not set: port + 1; 0: any free "
        "port); ignored with one worker",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="largest publish API body, decoded (webhooks: max_body_bytes per source)",
    )
    max_batch_events: int = Field(
        1000, ge=1, description="most events in one publish API batch; more: 413"
    )
    publish_timeout_s: float = Field(
        10.0, gt=0, description="how long a publish waits for the broker's acknowledgement"
    )
    shutdown_timeout_s: float = Field(
        15.0, gt=0, description="on SIGTERM, how long requests in flight may take to finish"
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After on 503 when the broker is down")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="a request's line and headers must arrive within this many seconds "
        "of its first byte; else the connection is closed",
    )
    idle_timeout_s: float = Field(
        75.0,
        gt=0,
        le=3600,
        description="a connection with no request in progress (before its first byte or "
        "between requests) is closed after this; keep it above a load balancer's idle timeout",
    )
    max_header_bytes: int = Field(
        8190, ge=1024, le=65536, description="longest request line or header line; else 400"
    )
    max_headers: int = Field(128, ge=16, le=1024, description="most header lines; else 400")

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> int | str:
        return parse_workers(value)

    admin_token: SecretStr | None = Field(
        None,
        description="the bearer token of /v1/dlq and the console's logins; not set: /v1/dlq is "
        "off and nobody can log in",
    )
    console: ConsoleSettings = Field(
        default_factory=ConsoleSettings, description="the web console at /console/"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="the least severe log records written"
    )


class EmbeddedSettings(Section):
    """Where `eventpipe dev` keeps the embedded PostgreSQL and Tansu broker."""

    data_dir: Path = Field(
        Path(".eventpipe"), description="where the embedded PostgreSQL keeps its data, and the lock"
    )
    postgres_port: int = Field(5432, ge=0, le=65535, description="the embedded PostgreSQL's port")
    kafka_port: int = Field(9092, ge=0, le=65535, description="the embedded broker's port")
    init_sql: list[Path] = Field(
        default_factory=list,
        description="SQL files `eventpipe dev` runs after migrations (demo tables); "
        "each must be safe to run again",
    )


class TraceSettings(Section):
    """The event trace index (eventpipe/trace): where each acknowledged record batch
    landed and what each pipeline batch did, one row per batch, not per event."""

    enabled: bool = Field(
        True, description="write the index; `eventpipe trace` answers only for what it holds"
    )
    retention: Duration = Field(
        7 * 86400.0, gt=0, description="index rows older than this are deleted (default 7d)"
    )
    flush_interval: Duration = Field(
        1.0, gt=0, le=60, description="the index writer writes what it holds this often"
    )
    queue_size: int = Field(
        200_000,
        ge=1000,
        description="records (event ids) waiting to be written; past it, new batches are "
        "dropped (their records counted in eventpipe_trace_dropped_total), never blocking "
        "a producer",
    )


class TelemetrySettings(Section):
    """OpenTelemetry tracing: on when ``otlp_endpoint`` (or the standard
    ``OTEL_EXPORTER_OTLP_ENDPOINT``) is set, off and free otherwise."""

    otlp_endpoint: str | None = Field(
        None,
        pattern=r"^https?://",
        description="OTLP/HTTP collector base URL (http://collector:4318); spans go to "
        "<url>/v1/traces",
    )
    service_name: str | None = Field(
        None, min_length=1, description="service.name; default $OTEL_SERVICE_NAME or eventpipe"
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="sent with every export (e.g. an API key); the environment variable "
        "takes key=value,key=value",
    )
    sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="share of new traces recorded; a caller's choice wins"
    )

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        out: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in v.split(","))):
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{part!r}: write key=value pairs separated by commas")
            out[name.strip()] = value.strip()
        return out


class LoggingSettings(Section):
    format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per line, with trace_id and span_id"
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        None, description="default service.log_level"
    )


class TopicSpec(Section):
    """A topic the service creates at start when it is missing (an existing one is
    left as it is)."""

    name: TopicName = Field(description="the topic")
    partitions: int | None = Field(None, ge=1, description="default: kafka.default_partitions")
    replication_factor: int | None = Field(
        None, ge=1, description="default: kafka.replication_factor"
    )
    config: dict[str, str] = Field(
        default_factory=dict, description='topic configs, e.g. retention.ms: "604800000"'
    )


class Settings(Section):
    service: ServiceSettings = Field(
        default_factory=ServiceSettings,
        description="the HTTP server: address, limits, admin token, console, log level",
    )
    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings,
        description="the brokers: address, producer, security, topics eventpipe creates",
    )
    database: DatabaseSettings = Field(
        default_factory=DatabaseSettings,
        description="eventpipe's PostgreSQL: offsets, dead-letter ledgers, registry, spool",
    )
    embedded: EmbeddedSettings = Field(
        default_factory=EmbeddedSettings,
        description="the PostgreSQL and broker `eventpipe dev` starts",
    )
    telemetry: TelemetrySettings = Field(
        default_factory=TelemetrySettings,
        description="OpenTelemetry tracing: spans exported over OTLP when an endpoint is set",
    )
    logging: LoggingSettings = Field(
        default_factory=LoggingSettings, description="log format (text or json) and level"
    )
    trace: TraceSettings = Field(
        default_factory=TraceSettings,
        description="the event trace index: what `eventpipe trace` and /v1/trace read",
    )
    topics: list[TopicSpec] = Field(
        default_factory=list,
        description="topics to create at start",
        examples=[
            [
                {"name": "orders", "partitions": 6},
                {"name": "audit", "config": {"retention.ms": "604800000"}},
            ]
        ],
    )
    # The sections of plugins, kept as they were written here: the service's config
    # (eventpipe.service.config.ServiceConfig) parses them with its catalog.
    sources: list[Any] = Field(
        default_factory=list,
        description="where events come from: webhooks, Kafka topics, PostgreSQL changes, an outbox",
    )
    pipelines: list[Any] = Field(
        default_factory=list,
        description="topics through steps into sinks",
    )


_SECTIONS: dict[str, type[Section]] = {
    "service": ServiceSettings,
    "kafka": KafkaSettings,
    "database": DatabaseSettings,
    "embedded": EmbeddedSettings,
    "telemetry": TelemetrySettings,
    "logging": LoggingSettings,
    "trace": TraceSettings,
}


def env_var_names() -> dict[str, str]:
    """Every environment variable the settings read -> the path it sets.  A nested
    section's fields get their own (``EVENTPIPE_SERVICE_CONSOLE_PUBLIC_READ`` ->
    ``service.console.public_read``)."""
    out: dict[str, str] = {}

    def walk(model: type[BaseModel], var: str, path: str) -> None:
        for name, info in model.model_fields.items():
            kind = info.annotation
            if isinstance(kind, type) and issubclass(kind, Section):
                walk(kind, f"{var}_{name.upper()}", f"{path}.{name}")
            else:
                out[f"{var}_{name.upper()}"] = f"{path}.{name}"

    for section, model in _SECTIONS.items():
        walk(model, f"{ENV_PREFIX}{section.upper()}", section)
    return out


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for var, path in env_var_names().items():
        if var in environ:
            *parents, field = path.split(".")
            node: dict[str, Any] = out
            for name in parents:
                node = node.setdefault(name, {})
            node[field] = environ[var]
    return out


def _merge(into: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` over ``into``; nested sections are merged key by key."""
    out = dict(into)
    for key, value in values.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            out[key] = _merge(current, value)
        else:
            out[key] = value
    return out


def _loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(root)"


def problems_from(
    exc: ValidationError,
    prefix: str = "",
    model: type[BaseModel] | None = None,
    *,
    also: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """(path, message) for each error of validating ``model``: an unknown key is
    named with the keys its place allows and the likeliest one
    (:func:`eventpipe.config_keys.error_message`; ``also``: top-level keys taken
    off before validating, e.g. a source's ``type`` and ``name``)."""
    out = []
    for err in exc.errors():
        path = _loc(tuple(err["loc"]))
        if prefix:
            path = prefix + ("" if path.startswith("[") else ".") + path
        out.append((path, error_message(err, model, also)))
    return out


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Load YAML (optional), apply env overrides, then explicit ``overrides``
    (e.g. CLI flags).  Raises :class:`ConfigError` with every problem."""
    settings, problems = read_settings(path, environ=environ, overrides=overrides)
    if problems:
        raise ConfigError(problems, str(path) if path else None)
    return settings


def read_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Settings, list[tuple[str, str]]]:
    """As :func:`load_settings`, but the problems found after the sections were
    read (cross-field rules) are returned with the settings instead of raised, so
    that ``eventpipe check`` can go on to check the rest against the live systems.
    Raises :class:`ConfigError` when the file or the core sections are invalid.
    ``sources`` and ``pipelines`` are left as written: the service's config loader
    (``eventpipe.service.config``) parses them."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source = str(path) if path else None
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise ConfigError([("(file)", f"{p} does not exist; pass -c PATH")], source) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([("(file)", f"not valid YAML: {exc}")], source) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([("(root)", "the file must hold a mapping of sections")], source)
        raw = loaded
    for layer in (_env_overrides(environ), overrides or {}):
        for section, values in layer.items():
            current = raw.get(section)
            raw[section] = _merge(current if isinstance(current, dict) else {}, values)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, model=Settings), source) from None
    problems = kafka_security_problems(settings.kafka)
    if settings.database.pool_min > settings.database.pool_max:
        problems.append(("database.pool_min", "must not exceed database.pool_max"))
    seen: set[str] = set()
    for i, t in enumerate(settings.topics):
        if t.name in seen:
            problems.append((f"topics[{i}].name", f"topic {t.name!r} is listed twice"))
        seen.add(t.name)
    return settings, problems


def kafka_security_problems(k: KafkaSettings) -> list[tuple[str, str]]:
    """SASL needs a mechanism and credentials; TLS files must exist."""
    problems: list[tuple[str, str]] = []
    if k.security_protocol.startswith("SASL_"):
        for field in ("sasl_mechanism", "sasl_username", "sasl_password"):
            if getattr(k, field) is None:
                problems.append(
                    (f"kafka.{field}", f"required with security_protocol {k.security_protocol}")
                )
    for field in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(k, field)
        if path is not None and not k.security_protocol.endswith("SSL"):
            problems.append((f"kafka.{field}", "used only with security_protocol SSL or SASL_SSL"))
        elif path is not None and not Path(path).is_file():
            problems.append((f"kafka.{field}", f"{path} is not a readable file"))
    if k.ssl_keyfile is not None and k.ssl_certfile is None:
        problems.append(("kafka.ssl_certfile", "required with kafka.ssl_keyfile"))
    return problems
