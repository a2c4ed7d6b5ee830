"""Typed service configuration: YAML file + ``EVENTPIPE_*`` environment overrides.

Every problem is reported at once with its path (STYLE.md habit 3).  The
environment wins over the file: ``EVENTPIPE_<SECTION>_<FIELD>`` sets
``<section>.<field>`` (``EVENTPIPE_KAFKA_BOOTSTRAP`` -> ``kafka.bootstrap``,
``EVENTPIPE_DATABASE_URL`` -> ``database.url``).  :func:`env_var_names` lists
them all, and compose/ is checked against it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from eventpipe.config_keys import did_you_mean, error_message
from eventpipe.durations import Duration
from eventpipe.errors import ConfigError
from eventpipe.topics import TopicName

ENV_PREFIX = "EVENTPIPE_"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(Section):
    bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port...]")
    client_id: str = "eventpipe"
    acks: Literal["all", 1, 0] = "all"
    linger_ms: int = Field(
        0,
        ge=0,
        le=10_000,
        description="0 sends at once; records still batch while a request is in flight",
    )
    max_batch_size: int = Field(256 * 1024, ge=1024)
    max_request_size: int = Field(1024 * 1024, ge=1024)
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "none"
    request_timeout_ms: int = Field(15_000, ge=100)
    metadata_max_age_ms: int = Field(30_000, ge=100)
    default_partitions: int = Field(3, ge=1)
    replication_factor: int = Field(1, ge=1)
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
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle; default: the system's")
    ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True


class DatabaseSettings(Section):
    url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/eventpipe"),
        description="libpq connection URI",
    )
    pool_min: int = Field(1, ge=0)
    pool_max: int = Field(10, ge=1)
    connect_timeout_s: float = Field(10.0, gt=0)


class ServiceSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(1024 * 1024, ge=1)
    max_batch_events: int = Field(1000, ge=1)
    publish_timeout_s: float = Field(10.0, gt=0)
    shutdown_timeout_s: float = Field(15.0, gt=0)
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
    admin_token: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class EmbeddedSettings(Section):
    """Where `eventpipe dev` keeps the embedded PostgreSQL and Tansu broker."""

    data_dir: Path = Path(".eventpipe")
    postgres_port: int = Field(5432, ge=0, le=65535)
    kafka_port: int = Field(9092, ge=0, le=65535)
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


class TopicSpec(Section):
    name: TopicName
    partitions: int | None = Field(None, ge=1)
    replication_factor: int | None = Field(None, ge=1)
    config: dict[str, str] = Field(default_factory=dict)


class Settings(Section):
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    trace: TraceSettings = Field(default_factory=TraceSettings)
    topics: list[TopicSpec] = Field(default_factory=list)
    # Sections later features own; kept as raw data here and validated by them.
    sources: list[dict[str, Any]] = Field(default_factory=list)
    pipelines: list[dict[str, Any]] = Field(default_factory=list)


_SECTIONS: dict[str, type[Section]] = {
    "service": ServiceSettings,
    "kafka": KafkaSettings,
    "database": DatabaseSettings,
    "embedded": EmbeddedSettings,
    "trace": TraceSettings,
}


def env_var_names() -> dict[str, str]:
    """Every environment variable the settings read -> the path it sets."""
    out: dict[str, str] = {}
    for section, model in _SECTIONS.items():
        for field in model.model_fields:
            out[f"{ENV_PREFIX}{section.upper()}_{field.upper()}"] = f"{section}.{field}"
    return out


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for var, path in env_var_names().items():
        if var in environ:
            section, field = path.split(".")
            out.setdefault(section, {})[field] = environ[var]
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
    """As :func:`load_settings`, but the problems of the feature sections (sources,
    pipelines, ...) are returned with the settings instead of raised, so that
    ``eventpipe check`` can go on to check the rest against the live systems.
    Raises :class:`ConfigError` when the file or the core sections are invalid."""
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
            merged = dict(current) if isinstance(current, dict) else {}
            merged.update(values)
            raw[section] = merged
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
    problems.extend(validate_sources(settings.sources))
    from eventpipe.registry import load_builtin_plugins

    load_builtin_plugins()  # feature modules register their SECTION_VALIDATORS on import
    for validator in SECTION_VALIDATORS:
        problems.extend(validator(settings))
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


# Feature packages add checks of the sections they own (e.g. pipelines); each
# returns (path, message) problems so every problem is reported at once.
SECTION_VALIDATORS: list[Callable[[Settings], list[tuple[str, str]]]] = []


def validate_sources(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``sources:`` entries are ``{type: <registered source>, name: ..., <its config>}``.
    Each is checked against its source class's typed ``Config``."""
    from eventpipe.base import sources as registry

    problems: list[tuple[str, str]] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"sources[{i}]"
        kind = entry.get("type")
        if not isinstance(kind, str):
            problems.append((f"{where}.type", "required: the kind of source"))
            continue
        if kind not in registry:
            known = registry.names()
            problems.append(
                (
                    f"{where}.type",
                    f"unknown source type {kind!r}{did_you_mean(kind, known)} "
                    f"(known: {', '.join(known) or 'none'})",
                )
            )
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            problems.append((f"{where}.name", "required: a unique name for this source"))
        elif name in names:
            problems.append((f"{where}.name", f"source name {name!r} is used twice"))
        else:
            names.add(name)
        cfg = {k: v for k, v in entry.items() if k not in ("type", "name")}
        try:
            model = registry.get(kind).Config
            model.model_validate(cfg)
        except ValidationError as exc:
            problems.extend(problems_from(exc, where, model, also=("type", "name")))
    return problems
