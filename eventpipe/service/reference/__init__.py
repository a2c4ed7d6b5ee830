"""docs/reference.md, generated from the code: ``python -m eventpipe.service.reference``
(``make docs``).

What a user can touch is read where it is defined, so the reference cannot drift
from it: the settings sections and every plugin's config from their pydantic
models (keys as YAML spells them, types, defaults, descriptions) and the catalog
(:mod:`eventpipe.service.catalog`), each plugin's example from its ``Plugin``
value, the environment variables from :func:`eventpipe.settings.env_var_names`,
the commands from ``eventpipe``'s parser and the HTTP routes from the lists kept
beside their installers (:func:`eventpipe.service.app.documented_routes`), as
Redpanda Connect generates its docs from its config specs.

tests/unit/test_reference.py fails when docs/reference.md differs from
:func:`render`, when :func:`reference` finds something undocumented (a key
without a description, a flag without help, a plugin without an example), and
when an example does not load through the config loader.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..app import documented_routes
from .cli_doc import CLI_INTRO, cli_reference
from .config_doc import PARTS as CONFIG_PARTS
from .markdown import Doc, Part, table

TITLE = "# eventpipe reference"
NOTE = (
    "Generated from the code by `make docs` (`python -m eventpipe.service.reference`): "
    "do not edit it by hand. `tests/unit/test_reference.py` fails when it is out of "
    "date, when a key, flag or route has no description, and when an example does "
    "not load. The README explains; this page lists."
)
ROUTES_INTRO = (
    "What the service serves on `service.host:service.port`. A process whose role "
    "is not `ingest` (or `all`) serves only `/healthz`, `/readyz`, `/metrics` and "
    "`/v1/status` (with its history). "
    "Errors are RFC 9457 problem JSON (the schema registry: Confluent's error "
    "bodies). A path in `{braces}` is a parameter; every GET also answers HEAD."
)


@dataclass(frozen=True)
class Reference:
    text: str
    undocumented: list[str]
    examples: list[tuple[str, str]]


def routes_reference(doc: Doc) -> None:
    rows = []
    for r in documented_routes():
        if not r.what:
            doc.undocumented.append(f"route {r.method} {r.path}: no description")
        rows.append((r.method, f"`{r.path}`", r.what, r.auth))
    doc.add(table(("method", "path", "what", "auth"), rows))


PARTS = (
    *CONFIG_PARTS,
    Part("Command line", "command-line", CLI_INTRO, cli_reference),
    Part("HTTP routes", "http-routes", ROUTES_INTRO, routes_reference),
)


def _contents() -> str:
    lines = []
    for part in PARTS:
        line = f"- [{part.title}](#{part.anchor})"
        entries = part.entries()
        if entries:
            line += ": " + ", ".join(f"[{name}](#{a})" for name, a in entries)
        lines.append(line)
    return "\n".join(lines)


def reference() -> Reference:
    doc = Doc()
    doc.add(TITLE, NOTE, _contents())
    for part in PARTS:
        part.render(doc)
    return Reference("\n\n".join(doc.parts) + "\n", doc.undocumented, doc.examples)


def render() -> str:
    """The text of docs/reference.md."""
    return reference().text


__all__ = ["PARTS", "Reference", "reference", "render"]
