"""The config file's part of the reference: settings sections, sources, pipelines,
steps, sinks and the environment variables, read from the typed models and the
catalog.  Every example shown is also kept whole (:attr:`Doc.examples`), as a
config file the real loader reads in tests/unit/test_reference.py."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from eventpipe.cli.common import REGISTRY_URL_ENV
from eventpipe.pipelines.spec import PipelineSpec, stateful_step_configs
from eventpipe.plugin import Plugin
from eventpipe.settings import Settings, env_var_names
from eventpipe.transforms.catalog import STEPS

from ..catalog import CATALOG, PIPELINE, SINKS, SOURCE_ROLES, SOURCES
from .markdown import Doc, Part, heading, indent, keys_table, paragraph, table, yaml_block
from .models import (
    Links,
    default_value,
    defaults,
    describe,
    field_key,
    inner_model,
    plain,
)

PLUGIN_SECTIONS = ("sources", "pipelines")
"""Top-level keys whose entries are plugins' configs (documented per plugin)."""

_PIPELINE_HEAD = "pipelines:\n  - name: reference\n    source: {topics: [reference.in]}\n"
_PARENT = {"source": "sources", "sink": "sinks", "step": "steps", "pipeline": "pipelines"}


def sentence(text: str | None) -> str:
    """A description (a fragment) as a sentence."""
    text = (text or "").strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".") if text else ""


def anchor(kind: str, type_: str) -> str:
    return f"{kind}-{type_}".replace("_", "-")


@functools.cache
def links() -> Links:
    """Plugins' configs: a key holding one links to its plugin (an outbox sink's
    ``rows`` are a postgres sink's keys, a webhook's ``validate`` a validate step's)."""
    out: dict[type[BaseModel], tuple[str, str]] = {}
    plugins: list[Plugin[Any, Any, Any]] = [*SINKS, *STEPS.values(), *SOURCES]
    for p in plugins:
        out.setdefault(p.config, (f"the {p.type} {p.kind}", anchor(p.kind, p.type)))
    return out


def wrap(kind: str, items: str) -> str:
    """An example's list items as a whole config file (a sink or a step inside a pipeline)."""
    if kind in ("source", "pipeline"):
        return f"{_PARENT[kind]}:\n{indent(items, 2)}\n"
    if kind == "sink":
        return f"{_PIPELINE_HEAD}    sinks:\n{indent(items, 6)}\n"
    return (
        f"{_PIPELINE_HEAD}    steps:\n{indent(items, 6)}\n"
        "    sinks: [{topic: {topic: reference.out}}]\n"
    )


def example(doc: Doc, where: str, kind: str, items: str) -> None:
    """Show ``items`` under its parent key; keep it whole for the loader's test."""
    if not items.strip():
        doc.undocumented.append(f"{where}: no example")
        return
    doc.add(yaml_block(f"{_PARENT[kind]}:\n{indent(items.strip(), 2)}"))
    doc.examples.append((where, wrap(kind, items.strip())))


# ---------------------------------------------------------------- sections
def _section_example(info: FieldInfo, model: type[BaseModel] | None, many: bool) -> Any:
    """The section's first ``Field(examples=...)``, else every key with its default."""
    if info.examples:
        return plain(info.examples[0])
    if model is None and not info.is_required():
        return default_value(info)
    if model is not None and not many:
        return defaults(model)
    return None


def sections(doc: Doc) -> None:
    found = links()
    for name, info in Settings.model_fields.items():
        if name in PLUGIN_SECTIONS:
            continue
        model, many = inner_model(info.annotation)
        doc.add(heading(3, f"`{name}`", anchor("settings", name)))
        doc.add(sentence(info.description), paragraph(model.__doc__ if model else None))
        if not info.description:
            doc.undocumented.append(f"settings: section {name} has no description")
        value = _section_example(info, model, many)
        if value is None:
            doc.undocumented.append(f"settings.{name}: no example (Field(examples=[...]))")
        else:
            text = yaml.safe_dump({name: value}, sort_keys=False, width=1 << 16)
            doc.add(yaml_block(text))
            doc.examples.append((f"settings.{name}", text))
        if model is None:
            doc.add(keys_table([field_key(name, info)]))
        else:
            if many:
                doc.add(f"Each item of `{name}`:")
            doc.model(f"settings.{name}", describe(model, found))


def overview(doc: Doc) -> None:
    rows = []
    for name, info in Settings.model_fields.items():
        target = name if name in PLUGIN_SECTIONS else anchor("settings", name)
        rows.append((f"[`{name}`](#{target})", info.description or ""))
    doc.add(table(("key", "what it holds"), rows))


# ----------------------------------------------------------------- plugins
def _plugin(doc: Doc, p: Plugin[Any, Any, Any], found: Links, *lines: str) -> None:
    where = f"{p.kind} {p.type}"
    doc.add(heading(3, f"`{p.type}`", anchor(p.kind, p.type)))
    doc.add(sentence(p.summary), *lines)
    example(doc, where, p.kind, p.example)
    doc.model(where, describe(p.config, found))


def sources(doc: Doc) -> None:
    found = links()
    for p in SOURCES:
        role = SOURCE_ROLES.get(p.type, "")
        _plugin(doc, p, found, f"`eventpipe run --role {role}` (or `all`) runs it." if role else "")


def pipelines(doc: Doc) -> None:
    found = links()
    p = PIPELINE
    doc.add(sentence(p.summary))
    example(doc, "pipeline", "pipeline", p.example)
    doc.model("pipeline", describe(PipelineSpec, found))


def _short_form(p: Plugin[Any, Any, Any]) -> str:
    if p.shorthand is None:
        return ""
    data, was = p.shorthand("VALUE")
    if not was or not isinstance(data, Mapping) or len(data) != 1:
        return ""
    main = next(iter(data))
    return f"Short form: `{p.type}: VALUE` stands for `{p.type}: {{{main}: VALUE}}`."


def steps(doc: Doc) -> None:
    found = links()
    for p in STEPS.values():
        _plugin(doc, p, found, _short_form(p))
    for name, model in stateful_step_configs().items():
        where = f"step {name}"
        doc.add(heading(3, f"`{name}`", anchor("step", name)))
        doc.add(paragraph(model.__doc__), "It keeps state, in a changelog-backed table.")
        if not model.__doc__:
            doc.undocumented.append(f"{where}: the config model has no docstring")
        example(doc, where, "step", getattr(model, "example", ""))
        doc.model(where, describe(model, found))


def sinks(doc: Doc) -> None:
    found = links()
    for p in SINKS:
        _plugin(doc, p, found)


# ------------------------------------------------------------- environment
def environment(doc: Doc) -> None:
    rows = [(f"`{var}`", _key_link(path)) for var, path in env_var_names().items()]
    rows.append(
        (f"`{REGISTRY_URL_ENV}`", "the schema registry of `eventpipe schemas` (`--registry`)")
    )
    doc.add(table(("variable", "sets"), rows))


def _key_link(path: str) -> str:
    section = path.split(".", 1)[0]
    return f"[`{path}`](#{anchor('settings', section)})"


SECTIONS = (
    "Each section is optional: every key has a default. Keys can also be set "
    "from the environment ([Environment variables](#environment)). Examples "
    "without comments list every key of the section with its default."
)
OVERVIEW = (
    "One YAML file, given to every command with `-c FILE`. It is checked when it "
    "is read, and every problem is reported at once with its path (an unknown key "
    "names the keys its place allows). `EVENTPIPE_*` environment variables win "
    "over the file, and a command's flags over both. A *duration* is a number of "
    "seconds or a number with a unit: `200ms`, `30s`, `5m`, `24h`, `7d`. A *topic "
    "name* is 1-249 letters, digits, `.`, `_` and `-`. *jq* marks a jq program (jaq "
    "by default; `engine: jq` for libjq)."
)
SOURCES_INTRO = (
    "Entries of `sources:`. `type` picks the source, `name` names it (unique among "
    "the sources); the other keys are the source's own. `eventpipe run --role` "
    "runs the sources of its role."
)
PIPELINES = (
    "Entries of `pipelines:`. Each pipeline consumes its source topics in its own "
    "consumer group, runs its [steps](#steps) and delivers to its [sinks](#sinks); "
    "`eventpipe run --role pipelines` runs them."
)
STEPS_INTRO = (
    "Entries of a pipeline's `steps:` (and `validate_input` / `validate_output`, "
    "which take a `validate` step's config). Each entry is a mapping with one key, "
    "the step's type. jq programs and schemas are compiled when the config is read."
)
SINKS_INTRO = (
    "Entries of a pipeline's `sinks:`, each a mapping with one key, the sink's type: "
    "`{postgres: {...}}`. Every sink also takes `name` (letters, digits, `.`, `_`, "
    "`-`; default: its type, or `<type>-<index>` for a second one of a type), which "
    "names it in logs, metrics, status and its offset marks."
)
ENVIRONMENT = (
    "`EVENTPIPE_<SECTION>_<KEY>` sets `<section>.<key>` (nested: "
    "`EVENTPIPE_SERVICE_CONSOLE_PUBLIC_READ`); it wins over the file, a command's "
    "flag wins over it."
)


def _listed(kind: str, names: Callable[[], Iterable[str]]) -> Callable[[], list[tuple[str, str]]]:
    """A part's entries in the contents: each name with its anchor."""
    return lambda: [(f"`{n}`", anchor(kind, n)) for n in names()]


PARTS = (
    Part("The config file", "config-file", OVERVIEW, overview),
    Part(
        "Settings sections",
        "settings",
        SECTIONS,
        sections,
        _listed("settings", lambda: [n for n in Settings.model_fields if n not in PLUGIN_SECTIONS]),
    ),
    Part("Sources", "sources", SOURCES_INTRO, sources, _listed("source", lambda: CATALOG.sources)),
    Part("Pipelines", "pipelines", PIPELINES, pipelines),
    Part(
        "Steps",
        "steps",
        STEPS_INTRO,
        steps,
        _listed("step", lambda: [*STEPS, *stateful_step_configs()]),
    ),
    Part("Sinks", "sinks", SINKS_INTRO, sinks, _listed("sink", lambda: CATALOG.sinks)),
    Part("Environment variables", "environment", ENVIRONMENT, environment),
)
"""The config file's parts of the reference, in order."""


__all__ = ["PARTS", "wrap"]
