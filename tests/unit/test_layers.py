"""Imports run downward only (docs/architecture.md):

    roof      eventpipe.service, eventpipe.cli, eventpipe.console (and each feature's
              ``cli`` module: its command, registered by eventpipe.cli.main)
    feature   backfill | trace
    feature   pipelines | connectors | schema_registry | dlq   (siblings, no cycle)
    feature   transforms
    core      everything else under eventpipe/ (plugin surface, contracts, clients)

and no module fills a list (or dict) another layer owns while it is imported:
plugins are plain values the roof lists (eventpipe/service/catalog.py).

Every ``import`` is read from the source with :mod:`ast`, those under
``if TYPE_CHECKING:`` included, so a type-only import cannot hide an upward edge.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "eventpipe"
ROOF = ("service", "cli", "console")
FEATURES = {
    "transforms": 1,
    "pipelines": 2,
    "connectors": 2,
    "schema_registry": 2,
    "dlq": 2,
    "backfill": 3,
    "trace": 3,  # reads the dead-letter ledgers and records (dlq)
}
ROOF_RANK = 9
MUTATORS = {"append", "extend", "insert", "add", "update", "setdefault", "__setitem__"}


@dataclass(frozen=True)
class Module:
    name: str  # eventpipe.connectors.webhook.source
    path: Path
    tree: ast.Module

    @property
    def folder(self) -> str:
        """The top-level part under eventpipe (a feature, the roof, or a core module)."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else ""

    @property
    def is_command(self) -> bool:
        """A feature's ``cli`` module: the feature's command, part of the roof."""
        parts = self.name.split(".")
        return len(parts) == 3 and parts[1] in FEATURES and parts[2] == "cli"


def rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2:
        return 0
    if parts[1] in ROOF or parts[1] == "__main__":
        return ROOF_RANK
    if parts[1] in FEATURES:
        if len(parts) >= 3 and parts[2] == "cli":
            return ROOF_RANK
        return FEATURES[parts[1]]
    return 0


def modules() -> list[Module]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(Module(".".join(parts), path, ast.parse(path.read_text(), str(path))))
    return out


def imports(m: Module) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every eventpipe import, relative ones resolved."""
    package = m.name if m.path.name == "__init__.py" else m.name.rpartition(".")[0]
    for node in ast.walk(m.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("eventpipe"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("eventpipe"):
                continue
            yield node.lineno, target
            for alias in node.names:  # `from eventpipe.service import app`: a module
                yield node.lineno, f"{target}.{alias.name}"


def _real(module: str, known: set[str]) -> str | None:
    """The module an import names (``from x import name`` names x when name is not a
    module)."""
    while module and module not in known:
        module = module.rpartition(".")[0]
    return module or None


ALL = modules()
KNOWN = {m.name for m in ALL}


def edges() -> Iterator[tuple[Module, int, str]]:
    for m in ALL:
        seen: set[str] = set()
        for line, target in imports(m):
            real = _real(target, KNOWN)
            if real is not None and real not in seen:
                seen.add(real)
                yield m, line, real


def test_no_feature_or_core_module_imports_the_roof() -> None:
    upward = [
        f"{m.path.relative_to(ROOT)}:{line} imports {target}"
        for m, line, target in edges()
        if rank(m.name) < ROOF_RANK and rank(target) == ROOF_RANK
    ]
    assert not upward, "the roof composes; nothing below imports it:\n" + "\n".join(upward)


def test_imports_run_downward() -> None:
    upward = [
        f"{m.path.relative_to(ROOT)}:{line} imports {target}"
        for m, line, target in edges()
        if rank(m.name) < rank(target) and rank(target) < ROOF_RANK
    ]
    assert not upward, "a layer imports one above it:\n" + "\n".join(upward)


def test_no_import_cycle_between_feature_folders() -> None:
    graph: dict[str, set[str]] = {f: set() for f in FEATURES}
    for m, _, target in edges():
        src, dst = m.folder, target.split(".")[1] if "." in target else ""
        if src in FEATURES and dst in FEATURES and src != dst and not m.is_command:
            graph[src].add(dst)
    found = cycles(graph)
    assert not found, "feature folders import each other in a cycle:\n" + "\n".join(found)


def cycles(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    out.append(" -> ".join([*path, start]))
                elif nxt not in path:
                    stack.append((nxt, [*path, nxt]))
    return out


def _imported_names(m: Module) -> set[str]:
    """Names bound at module level by an import from eventpipe (symbols or modules)."""
    names: set[str] = set()
    for node in m.tree.body:
        if isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").startswith("eventpipe")
        ):
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(
                (a.asname or a.name).split(".")[0]
                for a in node.names
                if a.name.startswith("eventpipe")
            )
    return names


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _module_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """Statements run at import time (module body, and the bodies of its if/try/with)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        yield node
        if isinstance(node, ast.If | ast.Try | ast.With):
            todo.extend(node.body)
            todo.extend(getattr(node, "orelse", []))
            todo.extend(getattr(node, "finalbody", []))
            for h in getattr(node, "handlers", []):
                todo.extend(h.body)


def registrations(m: Module) -> Iterator[str]:
    imported = _imported_names(m)
    for node in _module_level(m.tree):
        calls = [node.value] if isinstance(node, ast.Expr) else []
        for call in calls:
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr in MUTATORS:
                if _root(func.value) in imported:
                    yield f"{m.path.relative_to(ROOT)}:{node.lineno} {ast.unparse(call)[:80]}"
            elif isinstance(func, ast.Name) and func.id in imported and "register" in func.id:
                yield f"{m.path.relative_to(ROOT)}:{node.lineno} {ast.unparse(call)[:80]}"
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for t in targets:
            # `X[k] = v`, `X.attr = v`, and `X += [...]` (a list's += extends it in place)
            mutating = isinstance(t, ast.Subscript | ast.Attribute) or isinstance(
                node, ast.AugAssign
            )
            if mutating and _root(t) in imported:
                yield f"{m.path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)[:80]}"


def test_no_module_registers_itself_on_import() -> None:
    found = [r for m in ALL for r in registrations(m)]
    assert not found, "fills another module's registry at import:\n" + "\n".join(found)


def test_no_plugin_is_imported_by_a_string() -> None:
    found = [
        f"{m.path.relative_to(ROOT)}:{node.lineno}"
        for m in ALL
        for node in ast.walk(m.tree)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")
    ]
    assert not found, "built-in plugins are listed, not imported by name:\n" + "\n".join(found)


# ------------------------------------------------- the checks themselves can fail
def _module(source: str, name: str = "eventpipe.connectors.x") -> Module:
    return Module(name, PACKAGE / "connectors" / "x.py", ast.parse(source))


@pytest.mark.parametrize(
    "source",
    [
        "from eventpipe.service.app import ROUTE_INSTALLERS\nROUTE_INSTALLERS.append(f)\n",
        "from eventpipe.service import runner\nrunner.COMPONENT_FACTORIES['cdc'].append(f)\n",
        "from eventpipe.settings import SECTION_VALIDATORS\nSECTION_VALIDATORS += [f]\n",
        "from eventpipe import base\nbase.sinks._items['x'] = X\n",
        "from eventpipe.preflight import register_check\nregister_check('ingest', f)\n",
        "from eventpipe.service.app import ROUTES\nif True:\n    ROUTES.extend([f])\n",
    ],
)
def test_registrations_are_found(source: str) -> None:
    assert list(registrations(_module(source)))


def test_local_lists_are_not_registrations() -> None:
    source = "from eventpipe.plugin import Plugin\nMINE = []\nMINE.append(1)\nX = Plugin('a')\n"
    assert not list(registrations(_module(source)))


def test_rank_puts_commands_in_the_roof() -> None:
    assert rank("eventpipe.backfill.cli") == ROOF_RANK
    assert rank("eventpipe.service.catalog") == ROOF_RANK
    assert rank("eventpipe.backfill.runner") > rank("eventpipe.pipelines.spec")
    assert rank("eventpipe.pipelines.spec") > rank("eventpipe.transforms.chain")
    assert rank("eventpipe.transforms.chain") > rank("eventpipe.plugin") == 0
    m = _module("from .source import X\n", "eventpipe.connectors.webhook.routes")
    assert [t for _, t in imports(m)] == [
        "eventpipe.connectors.webhook.source",
        "eventpipe.connectors.webhook.source.X",
    ]


def test_cycles_are_found() -> None:
    assert cycles({"pipelines": {"connectors"}, "connectors": {"dlq"}, "dlq": set()}) == []
    assert "pipelines -> connectors -> pipelines" in cycles(
        {"pipelines": {"connectors"}, "connectors": {"pipelines"}}
    )
