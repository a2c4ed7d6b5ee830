"""The few Markdown pieces the reference is made of."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .models import Form, Key, ModelDoc


@dataclass
class Doc:
    """The parts written so far, and what the reference found missing."""

    parts: list[str] = field(default_factory=list)
    undocumented: list[str] = field(default_factory=list)
    examples: list[tuple[str, str]] = field(default_factory=list)
    """(where, a whole config file) for every example shown."""

    def add(self, *parts: str) -> None:
        self.parts.extend(p for p in parts if p)

    def model(self, where: str, found: ModelDoc) -> None:
        self.add(keys_table(found.keys), *forms(found.forms))
        self.undocumented.extend(f"{where}: key {p} has no description" for p in found.undocumented)


@dataclass(frozen=True)
class Part:
    """A part of the reference: its heading, what it opens with, what writes the
    rest, and its entries in the contents list as (name, anchor)."""

    title: str
    anchor: str
    intro: str
    write: Callable[[Doc], None]
    entries: Callable[[], list[tuple[str, str]]] = list

    def render(self, doc: Doc) -> None:
        doc.add(heading(2, self.title, self.anchor), self.intro)
        self.write(doc)


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def heading(level: int, text: str, anchor: str) -> str:
    """A heading with a stable anchor (the text may change; links keep working)."""
    return f'<a id="{anchor}"></a>\n\n{"#" * level} {text}'


def indent(text: str, by: int) -> str:
    pad = " " * by
    return "\n".join(pad + line if line.strip() else line for line in text.splitlines())


def yaml_block(text: str) -> str:
    return f"```yaml\n{text.rstrip()}\n```"


def keys_table(keys: Sequence[Key]) -> str:
    rows = [(f"`{k.path}`", k.type, k.default, k.description) for k in keys]
    return table(("key", "type", "default", "description"), rows)


def forms(found: Sequence[Form]) -> list[str]:
    return [f"{f.title}:\n\n{keys_table(f.keys)}" for f in found]


def paragraph(text: str | None) -> str:
    """A docstring's first paragraph as one line of Markdown (``x`` -> `x`)."""
    if not text:
        return ""
    first = text.strip().split("\n\n")[0]
    return " ".join(first.split()).replace("``", "`")


__all__ = [
    "Doc",
    "Part",
    "cell",
    "forms",
    "heading",
    "indent",
    "keys_table",
    "paragraph",
    "table",
    "yaml_block",
]
