"""Avro schema resolution (the spec's "Schema Resolution"), as Avro's Java
``SchemaCompatibility`` and Confluent apply it: can a *reader* schema read data
written with a *writer* schema?

- records: names match (or the writer's name is one of the reader's aliases);
  every reader field is found in the writer (by name or by one of its aliases)
  with a compatible type, or has a default;
- enums: names match; every writer symbol is a reader symbol, unless the reader
  has a default symbol;
- fixed: names and sizes match; arrays / maps: items / values compatible;
- promotions: int -> long, float, double; long -> float, double;
  float -> double; string <-> bytes;
- unions: every branch of a writer union must be readable; a reader union reads a
  writer type if one of its branches does.
"""

from __future__ import annotations

from typing import Any

from .models import Incompatibility
from .schemas import AVRO_PRIMITIVES, AvroSchema

PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset(("long", "float", "double")),
    "long": frozenset(("float", "double")),
    "float": frozenset(("double",)),
    "string": frozenset(("bytes",)),
    "bytes": frozenset(("string",)),
}
_NAMED = ("record", "error", "enum", "fixed")


def check(
    reader: AvroSchema, writer: AvroSchema, *, reader_label: str = "new", writer_label: str = "old"
) -> list[Incompatibility]:
    """Every reason ``reader`` cannot read what ``writer`` wrote (empty: compatible)."""
    return _Checker(reader.names, writer.names, reader_label, writer_label).check(
        reader.parsed, writer.parsed, ""
    )


def _simple(name: str) -> str:
    return name.rpartition(".")[2]


def _kind(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    kind = node["type"]
    return "record" if kind == "error" else str(kind)


class _Checker:
    def __init__(
        self, rnames: dict[str, Any], wnames: dict[str, Any], rlabel: str, wlabel: str
    ) -> None:
        self.rnames = rnames
        self.wnames = wnames
        self.rlabel = rlabel
        self.wlabel = wlabel
        self.in_progress: set[tuple[str, str]] = set()

    @staticmethod
    def resolve(node: Any, names: dict[str, Any]) -> Any:
        while True:
            if isinstance(node, str) and node not in AVRO_PRIMITIVES:
                node = names[node]
            elif isinstance(node, dict) and isinstance(node.get("type"), list | dict):
                node = node["type"]
            elif (
                isinstance(node, dict)
                and node.get("type") in names
                and node["type"] not in (AVRO_PRIMITIVES)
            ):
                node = names[node["type"]]
            else:
                return node

    def issue(
        self, kind: str, path: str, description: str, info: str | None = None
    ) -> Incompatibility:
        return Incompatibility(kind, path or "/", description, info)

    def check(self, r: Any, w: Any, path: str) -> list[Incompatibility]:
        r = self.resolve(r, self.rnames)
        w = self.resolve(w, self.wnames)
        rk, wk = _kind(r), _kind(w)
        if rk == wk:
            if rk in AVRO_PRIMITIVES:
                return []
            if rk == "array":
                return self.check(r["items"], w["items"], f"{path}/items")
            if rk == "map":
                return self.check(r["values"], w["values"], f"{path}/values")
            if rk == "union":
                return self.writer_union(r, w, path)
            key = (str(r["name"]), str(w["name"]))
            if key in self.in_progress:  # recursive type: assume compatible while checking
                return []
            self.in_progress.add(key)
            try:
                return self.named(rk, r, w, path)
            finally:
                self.in_progress.discard(key)
        if wk == "union":
            return self.writer_union(r, w, path)
        if rk == "union":
            for branch in r:
                if not self.check(branch, w, path):
                    return []
            return [
                self.issue(
                    "MISSING_UNION_BRANCH",
                    path,
                    f"The {self.rlabel} schema is missing a type inside a union field at path "
                    f"'{path or '/'}' in the {self.wlabel} schema",
                    f"reader union lacking writer type: {wk.upper()}",
                )
            ]
        if rk in PROMOTIONS.get(wk, ()):
            return []
        return [self.type_mismatch(rk, wk, path)]

    def type_mismatch(self, rk: str, wk: str, path: str) -> Incompatibility:
        return self.issue(
            "TYPE_MISMATCH",
            path,
            f"The type (path '{path or '/'}') of a field in the {self.rlabel} schema does not "
            f"match with the {self.wlabel} schema",
            f"reader type: {rk.upper()} not compatible with writer type: {wk.upper()}",
        )

    def writer_union(self, r: Any, w: list[Any], path: str) -> list[Incompatibility]:
        out: list[Incompatibility] = []
        for i, branch in enumerate(w):
            out.extend(self.check(r, branch, f"{path}/{i}"))
        return out

    def names_match(self, r: dict[str, Any], w: dict[str, Any]) -> bool:
        rname, wname = str(r["name"]), str(w["name"])
        if _simple(rname) == _simple(wname):
            return True
        namespace = rname.rpartition(".")[0]
        given = set(r.get("aliases", ()))
        aliases = {a if "." in a or not namespace else f"{namespace}.{a}" for a in given}
        return wname in aliases or _simple(wname) in given

    def named(
        self, kind: str, r: dict[str, Any], w: dict[str, Any], path: str
    ) -> list[Incompatibility]:
        if not self.names_match(r, w):
            return [
                self.issue(
                    "NAME_MISMATCH",
                    f"{path}/name",
                    f"The name of the schema has changed (path '{path}/name')",
                    f"expected: {w['name']}",
                )
            ]
        if kind == "fixed":
            if r["size"] != w["size"]:
                return [
                    self.issue(
                        "FIXED_SIZE_MISMATCH",
                        f"{path}/size",
                        f"The size of FIXED type field at path '{path}/size' in the {self.rlabel} "
                        f"schema does not match with the {self.wlabel} schema",
                        f"expected: {w['size']}, found: {r['size']}",
                    )
                ]
            return []
        if kind == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                shown = ", ".join(missing)
                return [
                    self.issue(
                        "MISSING_ENUM_SYMBOLS",
                        f"{path}/symbols",
                        f"The {self.rlabel} schema is missing enum symbols '[{shown}]' at path "
                        f"'{path}/symbols' in the {self.wlabel} schema",
                        f"[{shown}]",
                    )
                ]
            return []
        return self.record(r, w, path)

    def record(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[Incompatibility]:
        out: list[Incompatibility] = []
        wfields = {f["name"]: f for f in w["fields"]}
        for i, rf in enumerate(r["fields"]):
            fpath = f"{path}/fields/{i}"
            wf = wfields.get(rf["name"])
            if wf is None:
                wf = next((wfields[a] for a in rf.get("aliases", ()) if a in wfields), None)
            if wf is None:
                if "default" not in rf:
                    out.append(
                        self.issue(
                            "READER_FIELD_MISSING_DEFAULT_VALUE",
                            fpath,
                            f"The field '{rf['name']}' at path '{fpath}' in the "
                            f"{self.rlabel} schema has no default value and is missing in "
                            f"the {self.wlabel} schema",
                            str(rf["name"]),
                        )
                    )
                continue
            out.extend(self.check(rf["type"], wf["type"], f"{fpath}/type"))
        return out
