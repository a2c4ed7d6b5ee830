"""docs/reference.md is what the code says, and says everything a user can touch.

- the file equals what ``python -m eventpipe.service.reference`` writes (``make docs``);
- every config key (settings, sources, pipelines, steps, sinks, and the parts
  nested in them) has a description, every command and flag a help line, every
  route a line, every plugin an example;
- every example shown loads through the real config loader without a problem;
- the routes it lists are the routes the service's application serves (with the
  routes the source plugins' components offer), and the console's say the access
  their handlers ask for.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal, cast

import pytest
import yaml
from aiohttp import web
from pydantic import BaseModel, Field

from eventpipe.context import Context
from eventpipe.durations import Duration
from eventpipe.plugin import Component
from eventpipe.route_docs import RouteDoc
from eventpipe.service.app import build_app, documented_routes
from eventpipe.service.catalog import CATALOG, SOURCES
from eventpipe.service.config import read_config
from eventpipe.service.reference import reference, render
from eventpipe.service.reference.models import describe, words
from eventpipe.settings import Section, Settings
from eventpipe.topics import TopicName

DOC = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
REFERENCE = reference()


def test_docs_reference_md_is_current() -> None:
    assert DOC.is_file(), "docs/reference.md is missing: run `make docs`"
    assert DOC.read_text() == render(), "docs/reference.md is out of date: run `make docs`"


def test_everything_a_user_can_touch_is_described() -> None:
    missing = "\n".join(REFERENCE.undocumented)
    assert not REFERENCE.undocumented, (
        "describe these (a pydantic Field(description=...), a flag's help=, a RouteDoc, "
        f"a plugin's example=), then run `make docs`:\n{missing}"
    )


@pytest.mark.parametrize("where,text", REFERENCE.examples, ids=[w for w, _ in REFERENCE.examples])
def test_every_example_loads(tmp_path: Path, where: str, text: str) -> None:
    path = tmp_path / "eventpipe.yaml"
    path.write_text(text)
    _config, problems = read_config(path, environ={})
    assert problems == [], f"the example of {where} does not load:\n{text}"


def test_every_plugin_and_section_has_an_example() -> None:
    shown = {where for where, _ in REFERENCE.examples}
    plugins = [f"source {p.type}" for p in SOURCES] + [f"sink {t}" for t in CATALOG.sinks]
    sections = [f"settings.{n}" for n in Settings.model_fields if n not in ("sources", "pipelines")]
    assert set(plugins + sections + ["pipeline", "step jq", "step aggregate"]) <= shown


# ------------------------------------------------------------------ routes
def _context() -> Context:
    """Enough of a context to build the app and the components (nothing is started)."""
    settings = Settings.model_validate({"service": {"admin_token": "t"}})
    none = cast(Any, None)
    publisher = cast(Any, SimpleNamespace(trace=None))  # no trace index
    return Context(settings, publisher, none, pool=cast(Any, object()), catalog=CATALOG)


def _components(ctx: Context) -> list[Component]:
    """A component of every source plugin, built from the entries of its example."""
    out = []
    for plugin in SOURCES:
        for item in yaml.safe_load(plugin.example):
            entry = plugin.config.model_validate(item)
            if getattr(entry, "spool", None) == "postgres":
                continue  # the spool needs a live pool; the other entry serves the route
            out.append(plugin.build(entry, entry.name, ctx))
    return out


def _served(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        resource = route.resource
        if route.method != "HEAD" and resource is not None:
            out.add((route.method, resource.canonical))
    return out


def test_the_routes_listed_are_the_routes_served() -> None:
    ctx = _context()
    app = build_app(ctx, components=_components(ctx))
    listed = {(r.method, r.path) for r in documented_routes()}
    served = _served(app)
    unlisted, unserved = sorted(served - listed), sorted(listed - served)
    assert not unlisted, f"served but not listed (add a RouteDoc beside its installer): {unlisted}"
    assert not unserved, f"listed but not served (drop its RouteDoc): {unserved}"
    assert len(listed) == len(documented_routes()), "a route is listed twice"


def test_ops_only_processes_serve_the_ops_routes() -> None:
    app = build_app(_context(), ops_only=True)
    assert _served(app) == {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/v1/status"),  # `eventpipe status --url` against any worker
        ("GET", "/v1/status/history"),
    }


def test_console_routes_say_the_access_their_handlers_ask_for() -> None:
    from eventpipe.console.access import Access, route

    app = build_app(_context())
    docs = {(r.method, r.path): r for r in documented_routes()}
    checked = 0
    for resource in app.router.resources():
        sub = resource.get_info().get("app")
        if not isinstance(sub, web.Application) or not resource.canonical.startswith("/console"):
            continue
        for r in sub.router.routes():
            if r.method == "HEAD" or r.resource is None:
                continue
            path = r.resource.canonical
            access: Access = getattr(r.handler, "console_access", "read")
            expected = route(r.method, path.removeprefix("/console"), "", access)
            assert docs[(r.method, path)].auth == expected.auth, f"{r.method} {path}"
            checked += 1
    assert checked >= 15


# ----------------------------------------------------- the generator's parts
def test_a_section_added_to_the_settings_is_picked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventpipe.service.reference import config_doc

    class TelemetrySettings(Section):
        """Where traces go."""

        endpoint: str | None = None

    class More(Settings):
        telemetry: TelemetrySettings = Field(
            default_factory=TelemetrySettings, description="traces and metrics out"
        )
        log_format: Literal["text", "json"] = Field("text", description="how logs are written")

    monkeypatch.setattr(config_doc, "Settings", More)
    found = reference()
    assert '<a id="settings-telemetry"></a>\n\n### `telemetry`' in found.text
    assert "| `endpoint` | string | not set |  |" in found.text
    assert "| `log_format` | one of `text`, `json` | `text` | how logs are written |" in found.text
    assert found.undocumented == ["settings.telemetry: key endpoint has no description"]
    assert ("settings.telemetry", "telemetry:\n  endpoint: null\n") in found.examples
    assert ("settings.log_format", "log_format: text\n") in found.examples


def test_a_key_without_a_description_is_reported() -> None:
    class Inner(BaseModel):
        depth: int = Field(1, description="how deep")
        width: int = 2

    class Outer(BaseModel):
        name: str = Field(description="what it is called")
        inner: Inner = Field(default_factory=Inner)

    found = describe(Outer, {})
    assert found.undocumented == ["inner", "inner.width"]
    assert [k.path for k in found.keys] == ["name", "inner", "inner.depth", "inner.width"]
    assert found.keys[0].default == "required"
    assert found.keys[2].default == "`1`"


def test_tagged_unions_become_one_table_per_form() -> None:
    class A(BaseModel):
        kind: Literal["a"] = Field(description="a")
        x: int = Field(0, description="x")

    class B(BaseModel):
        kind: Literal["b"] = Field(description="b")

    class Holder(BaseModel):
        part: A | B = Field(discriminator="kind", description="one of two")

    found = describe(Holder, {})
    assert found.keys[0].type == "object: one of the forms below (by `kind`)"
    assert [f.title for f in found.forms] == ["`part` with `kind: a`", "`part` with `kind: b`"]
    assert [k.path for k in found.forms[0].keys] == ["part.kind", "part.x"]


@pytest.mark.parametrize(
    "tp,expected",
    [
        (Duration, "duration"),
        (TopicName | None, "topic name"),
        (list[TopicName], "list of topic names"),
        (Literal["all", 1, 0], "one of `all`, `1`, `0`"),
        (Literal["webhook"], "`webhook`"),
        (list[Literal[400, 422]], "list of values, each one of `400`, `422`"),
        (int | Literal["latest"], "integer or `latest`"),
        (dict[str, list[str]], "mapping of string to lists of strings"),
        (Annotated[int, Field(ge=1, le=10)], "integer, >= 1, <= 10"),
        (Annotated[str, Field(min_length=1)], "string, not empty"),
        (
            Annotated[list[str], Field(min_length=2, max_length=5)],
            "list of strings, at least 2 items, at most 5 items",
        ),
        (list[Any], "list of mappings"),
    ],
)
def test_types_in_plain_words(tp: Any, expected: str) -> None:
    assert words(tp) == expected


def test_durations_are_shown_as_a_config_file_writes_them() -> None:
    class Timing(BaseModel):
        window: Duration = Field(900.0, description="w")
        wait: Duration = Field(0.2, description="w")
        odd: Duration = Field(1.5, description="w")

    assert [k.default for k in describe(Timing, {}).keys] == ["`15m`", "`200ms`", "`1500ms`"]


def test_route_docs_under_a_prefix() -> None:
    from eventpipe.route_docs import under

    assert under("/schema-registry", [RouteDoc("GET", "/", "root")])[0].path == "/schema-registry/"
