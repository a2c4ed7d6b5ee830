"""The service's config: the core sections, plus ``sources:`` and ``pipelines:``
read with the catalog.

``sources:`` entries are parsed once, as a union of the source plugins' entry
models discriminated by ``type`` (``{type: webhook, name: billing, ...}``); each
feature receives its typed entry, never a dict.  ``pipelines:`` are checked with
the sink catalog.  Every problem is reported at once, with its path
(``sources[1].verify.secrets[0]``, ``pipelines[0].sinks[1].postgres.table``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from eventpipe.config_keys import did_you_mean, error_message
from eventpipe.errors import ConfigError
from eventpipe.pipelines.spec import validate_pipelines
from eventpipe.plugin import Catalog, SourceConfig
from eventpipe.settings import Settings, read_settings

from .catalog import CATALOG, SOURCES

Problem = tuple[str, str]

if TYPE_CHECKING:
    SourceEntry = SourceConfig
else:
    SourceEntry = Annotated[
        Union[tuple(p.config for p in SOURCES)],  # noqa: UP007  (built from the catalog)
        Field(discriminator="type"),
    ]


class ServiceConfig(Settings):
    """Settings whose ``sources`` are typed entries (each a :class:`SourceConfig`
    subclass: ``WebhookEntry``, ``PostgresCdcEntry``, ...)."""

    sources: list[SourceEntry] = Field(default_factory=list)


_ENTRY: TypeAdapter[SourceConfig] = TypeAdapter(SourceEntry)


def parse_sources(
    raw: Sequence[Any], catalog: Catalog = CATALOG
) -> tuple[list[SourceConfig], list[Problem]]:
    """The valid entries (each parsed once by its ``type``) and every problem."""
    adapter = _ENTRY if catalog is CATALOG else _adapter(catalog)
    known = sorted(catalog.sources)
    entries: list[SourceConfig] = []
    problems: list[Problem] = []
    names: dict[str, int] = {}
    for i, item in enumerate(raw):
        where = f"sources[{i}]"
        kind = _get(item, "type")
        try:
            entry = adapter.validate_python(item)
        except ValidationError as exc:
            plugin = catalog.sources.get(kind) if isinstance(kind, str) else None
            model = plugin.config if plugin is not None else None
            problems.extend(_entry_problems(exc, where, kind, known, model))
            continue
        if entry.name in names:
            problems.append(
                (
                    f"{where}.name",
                    f"source name {entry.name!r} is used twice (also sources[{names[entry.name]}])",
                )
            )
            continue
        names[entry.name] = i
        entries.append(entry)
    return entries, problems


def _adapter(catalog: Catalog) -> TypeAdapter[SourceConfig]:
    models = tuple(p.config for p in catalog.sources.values())
    if len(models) == 1:
        return TypeAdapter(models[0])
    union: Any = Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007
    return TypeAdapter(union)


def _get(item: Any, key: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(key)
    return getattr(item, key, None)


def _entry_problems(
    exc: ValidationError,
    where: str,
    kind: Any,
    known: list[str],
    model: type[BaseModel] | None,
) -> list[Problem]:
    """The entry's problems with its path, the discriminator's tag left out of it (an
    unknown key names the keys the entry allows, eventpipe.config_keys)."""
    out: list[Problem] = []
    for err in exc.errors():
        kind_of = err["type"]
        top = not err["loc"]  # the entry's own tag (a nested union names its place)
        if top and kind_of == "union_tag_not_found":
            out.append((f"{where}.type", "required: the kind of source"))
            continue
        if top and kind_of == "union_tag_invalid":
            hint = did_you_mean(str(kind), known)
            out.append(
                (f"{where}.type", f"unknown source type {kind!r}{hint} (known: {', '.join(known)})")
            )
            continue
        loc = tuple(err["loc"])
        if loc and loc[0] == kind:  # the tag pydantic puts first
            loc = loc[1:]
            err = {**err, "loc": loc}
        path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        msg = error_message(err, model)
        if kind_of in ("missing", "string_too_short") and loc == ("name",):
            msg = "required: a unique name for this source"
        out.append((path, msg.removeprefix("Value error, ")))
    return out


def parse_config(
    settings: Settings, catalog: Catalog = CATALOG
) -> tuple[ServiceConfig, list[Problem]]:
    """``settings`` with its sources parsed and its pipelines checked; the config
    holds the valid entries, the problems say what was left out."""
    entries, problems = parse_sources(settings.sources, catalog)
    problems.extend(validate_pipelines(settings.pipelines, catalog.sinks))
    fields = {name: getattr(settings, name) for name in Settings.model_fields}
    fields["sources"] = entries
    config = ServiceConfig.model_construct(_fields_set=set(settings.model_fields_set), **fields)
    return config, problems


def service_config(settings: Settings, catalog: Catalog = CATALOG) -> ServiceConfig:
    """``settings`` as a :class:`ServiceConfig`; raises :class:`ConfigError` with
    every problem of its sources and pipelines."""
    config, problems = parse_config(settings, catalog)
    if problems:
        raise ConfigError(problems)
    return config


def read_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[ServiceConfig, list[Problem]]:
    """As :func:`eventpipe.settings.read_settings`, with sources and pipelines: their
    problems are returned (``eventpipe check`` goes on to the live checks)."""
    settings, problems = read_settings(path, environ=environ, overrides=overrides)
    config, more = parse_config(settings)
    return config, problems + more


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> ServiceConfig:
    """Load the YAML (optional), environment and ``overrides``; raises
    :class:`ConfigError` with every problem."""
    config, problems = read_config(path, environ=environ, overrides=overrides)
    if problems:
        raise ConfigError(problems, str(path) if path else None)
    return config


__all__ = [
    "ServiceConfig",
    "SourceEntry",
    "load_config",
    "parse_config",
    "parse_sources",
    "read_config",
    "service_config",
]
