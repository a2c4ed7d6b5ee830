"""JSON Schema compatibility: can a *reader* schema accept every document the
*writer* schema accepts?  (Drafts 7 and 2020-12; references are inlined first.)

The rules follow Confluent's JSON Schema checks:

- objects: a property the reader adds must be one the writer could never send
  (writer content model closed, ``additionalProperties: false``) or accept
  anything; a property the reader removes must still be allowed by the reader's
  ``additionalProperties`` (open content model); a property the reader newly
  requires breaks old data; closing the content model breaks it too;
- types: the reader's types must include the writer's (``integer`` fits ``number``);
- enum / const: the reader's values must include the writer's;
- limits: maximum, maxLength, maxItems, maxProperties may only grow, their
  minimum counterparts only shrink; a new pattern, multipleOf or limit breaks;
- arrays: items (and tuple positions) compatible;
- anyOf / oneOf: every writer branch must be accepted by some reader branch;
  allOf branches are merged.
"""

from __future__ import annotations

import re
from typing import Any

from .models import Incompatibility
from .schemas import JsonSchema

_ANNOTATIONS = frozenset(
    (
        "$schema",
        "$id",
        "id",
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "definitions",
        "$defs",
        "readOnly",
        "writeOnly",
        "deprecated",
        "$anchor",
        "$dynamicAnchor",
        "$vocabulary",
        "format",
    )
)
_UPPER_LIMITS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_LOWER_LIMITS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_OBJECT_KEYS = frozenset(
    (
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "dependentRequired",
        "dependencies",
        "propertyNames",
        "unevaluatedProperties",
    )
)
_ARRAY_KEYS = frozenset(("items", "prefixItems", "additionalItems", "contains", "uniqueItems"))


def check(
    reader: JsonSchema, writer: JsonSchema, *, reader_label: str = "new", writer_label: str = "old"
) -> list[Incompatibility]:
    """Every reason ``reader`` rejects documents ``writer`` accepts (empty: compatible)."""
    return _Checker(reader_label, writer_label).cmp(reader.resolved, writer.resolved, "#")


def _is_true(s: Any) -> bool:
    return s is True or (isinstance(s, dict) and all(k in _ANNOTATIONS for k in s))


def _is_false(s: Any) -> bool:
    return s is False or (isinstance(s, dict) and "not" in s and _is_true(s["not"]))


def _as_dict(s: Any) -> dict[str, Any]:
    if s is True:
        return {}
    if s is False:
        return {"not": {}}
    return dict(s)


def _types(s: dict[str, Any]) -> set[str] | None:
    t = s.get("type")
    if t is None:
        values = _values(s)
        if values is None:
            return None
        return {_type_of(v) for v in values}
    return {t} if isinstance(t, str) else set(t)


def _type_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _values(s: dict[str, Any]) -> list[Any] | None:
    if "const" in s:
        return [s["const"]]
    if isinstance(s.get("enum"), list):
        return list(s["enum"])
    return None


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).upper()


def _fits(t: str, types: set[str]) -> bool:
    return t in types or (t == "integer" and "number" in types)


def _merge_all_of(s: dict[str, Any]) -> dict[str, Any]:
    """Fold ``allOf`` branches into one schema (properties and required united,
    types intersected, other keywords: the last branch wins)."""
    if not isinstance(s.get("allOf"), list):
        return s
    out = {k: v for k, v in s.items() if k != "allOf"}
    for branch in s["allOf"]:
        if not isinstance(branch, dict):
            if branch is False:
                return {"not": {}}
            continue
        b = _merge_all_of(branch)
        for k, v in b.items():
            if k == "properties" and isinstance(out.get(k), dict):
                out[k] = {**out[k], **v}
            elif k == "required" and isinstance(out.get(k), list):
                out[k] = list(dict.fromkeys([*out[k], *v]))
            elif k == "type" and "type" in out:
                mine = {out["type"]} if isinstance(out["type"], str) else set(out["type"])
                theirs = {v} if isinstance(v, str) else set(v)
                both = {t for t in mine if _fits(t, theirs)} | {t for t in theirs if _fits(t, mine)}
                out["type"] = sorted(both)
            else:
                out[k] = v
    return out


class _Checker:
    def __init__(self, rlabel: str, wlabel: str) -> None:
        self.rl = rlabel
        self.wl = wlabel

    def issue(self, kind: str, path: str, description: str) -> Incompatibility:
        return Incompatibility(kind, path, description)

    def cmp(self, r: Any, w: Any, path: str) -> list[Incompatibility]:
        if _is_true(r) or _is_false(w):
            return []
        if _is_false(r):
            return [
                self.issue(
                    "SCHEMA_NARROWED",
                    path,
                    f"The {self.rl} schema rejects every value at path '{path}' that the {self.wl} "
                    "schema accepts",
                )
            ]
        r = _merge_all_of(_as_dict(r))
        w = _merge_all_of(_as_dict(w))
        if "$ref" in r or "$ref" in w:  # a recursive reference left in place
            if r.get("$ref") == w.get("$ref"):
                return []
            r = {k: v for k, v in r.items() if k != "$ref"}
            w = {k: v for k, v in w.items() if k != "$ref"}
        for kw in ("anyOf", "oneOf"):
            if isinstance(w.get(kw), list):
                base = {k: v for k, v in w.items() if k != kw}
                out: list[Incompatibility] = []
                for i, branch in enumerate(w[kw]):
                    merged = _merge_all_of({"allOf": [base, branch]}) if base else branch
                    out.extend(self.cmp(r, merged, f"{path}/{kw}/{i}"))
                return out
        for kw in ("anyOf", "oneOf"):
            if isinstance(r.get(kw), list):
                base = {k: v for k, v in r.items() if k != kw}
                out = self.cmp(base, w, path) if base else []
                if not any(
                    not self.cmp(branch, w, f"{path}/{kw}/{i}") for i, branch in enumerate(r[kw])
                ):
                    out.append(
                        self.issue(
                            "COMBINED_TYPE_SUBSCHEMAS_CHANGED",
                            f"{path}/{kw}",
                            f"No subschema of '{kw}' at path '{path}/{kw}' in the {self.rl} schema "
                            f"accepts what the {self.wl} schema allows there",
                        )
                    )
                return out
        out = []
        if "not" in r and r["not"] != w.get("not"):
            out.append(
                self.issue(
                    "NOT_TYPE_CHANGED",
                    f"{path}/not",
                    f"The 'not' keyword at path '{path}/not' in the {self.rl} schema differs from "
                    f"the {self.wl} schema",
                )
            )
        rt, wt = _types(r), _types(w)
        if rt is not None:
            if wt is None:
                out.append(
                    self.issue(
                        "TYPE_NARROWED",
                        f"{path}/type",
                        f"The {self.rl} schema at path '{path}' only accepts type(s) "
                        f"{sorted(rt)}, the {self.wl} schema any type",
                    )
                )
            else:
                lost = sorted(t for t in wt if not _fits(t, rt))
                if lost:
                    out.append(
                        self.issue(
                            "TYPE_NARROWED" if any(_fits(t, wt) for t in rt) else "TYPE_CHANGED",
                            f"{path}/type",
                            f"The type at path '{path}' changed: the {self.wl} schema allows "
                            f"{sorted(wt)}, the {self.rl} schema {sorted(rt)}",
                        )
                    )
        out.extend(self.values(r, w, path))
        out.extend(self.limits(r, w, path))

        def both(t: str, keys: frozenset[str]) -> bool:
            return (
                (rt is None or t in rt)
                and (wt is None or t in wt)
                and any(k in r or k in w for k in keys)
            )

        if both("object", _OBJECT_KEYS):
            out.extend(self.objects(r, w, path))
        if both("array", _ARRAY_KEYS):
            out.extend(self.arrays(r, w, path))
        return out

    def values(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[Incompatibility]:
        rv = _values(r)
        if rv is None:
            return []
        wv = _values(w)
        if wv is None:
            return [
                self.issue(
                    "ENUM_ARRAY_ADDED",
                    f"{path}/enum",
                    f"The {self.rl} schema restricts the values at path '{path}' to {rv}; the "
                    f"{self.wl} schema did not",
                )
            ]
        missing = [v for v in wv if v not in rv]
        if missing:
            return [
                self.issue(
                    "ENUM_ARRAY_NARROWED",
                    f"{path}/enum",
                    f"The {self.rl} schema at path '{path}' no longer allows the values {missing}",
                )
            ]
        return []

    def limits(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[Incompatibility]:
        out: list[Incompatibility] = []
        for key, upper in [(k, True) for k in _UPPER_LIMITS] + [(k, False) for k in _LOWER_LIMITS]:
            rv, wv = r.get(key), w.get(key)
            if not isinstance(rv, int | float) or isinstance(rv, bool):
                continue
            name = _snake(key)
            if not isinstance(wv, int | float) or isinstance(wv, bool):
                out.append(
                    self.issue(
                        f"{name}_ADDED",
                        f"{path}/{key}",
                        f"The {self.rl} schema adds '{key}: {rv}' at path '{path}'",
                    )
                )
            elif (rv < wv) if upper else (rv > wv):
                out.append(
                    self.issue(
                        f"{name}_{'DECREASED' if upper else 'INCREASED'}",
                        f"{path}/{key}",
                        f"'{key}' at path '{path}' changed from {wv} to {rv}, rejecting values "
                        f"the {self.wl} schema allows",
                    )
                )
        if "multipleOf" in r:
            rm, wm = r["multipleOf"], w.get("multipleOf")
            ratio = wm / rm if isinstance(wm, int | float) and rm else None
            if ratio is None or abs(ratio - round(ratio)) > 1e-9:
                out.append(
                    self.issue(
                        "MULTIPLE_OF_CHANGED",
                        f"{path}/multipleOf",
                        f"'multipleOf: {rm}' at path '{path}' rejects values the {self.wl} "
                        "schema allows",
                    )
                )
        for key in ("pattern", "propertyNames", "contains"):
            if key in r and r[key] != w.get(key):
                out.append(
                    self.issue(
                        _snake(key) + ("_ADDED" if key not in w else "_CHANGED"),
                        f"{path}/{key}",
                        f"'{key}' at path '{path}' in the {self.rl} schema differs from the "
                        f"{self.wl} schema",
                    )
                )
        if r.get("uniqueItems") is True and w.get("uniqueItems") is not True:
            out.append(
                self.issue(
                    "UNIQUE_ITEMS_ADDED",
                    f"{path}/uniqueItems",
                    f"The {self.rl} schema requires unique items at path '{path}'",
                )
            )
        return out

    # ------------------------------------------------------------------ objects

    @staticmethod
    def _additional(s: dict[str, Any]) -> Any:
        if "additionalProperties" in s:
            return s["additionalProperties"]
        return s.get("unevaluatedProperties", True)

    @staticmethod
    def _for_name(s: dict[str, Any], name: str) -> Any:
        """The subschema ``s`` applies to a property ``name`` it does not list."""
        for pattern, sub in (s.get("patternProperties") or {}).items():
            try:
                if re.search(pattern, name):
                    return sub
            except re.error:
                continue
        return _Checker._additional(s)

    def objects(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[Incompatibility]:
        out: list[Incompatibility] = []
        rprops: dict[str, Any] = r.get("properties") or {}
        wprops: dict[str, Any] = w.get("properties") or {}
        wreq = set(w.get("required") or ())
        for name in r.get("required") or ():
            if name not in wreq:
                out.append(
                    self.issue(
                        "REQUIRED_PROPERTY_ADDED",
                        f"{path}/required",
                        f"The {self.rl} schema requires property '{name}' at path '{path}', "
                        f"which the {self.wl} schema does not require",
                    )
                )
        for name, rsub in rprops.items():
            ppath = f"{path}/properties/{name}"
            if name in wprops:
                out.extend(self.cmp(rsub, wprops[name], ppath))
                continue
            wsub = self._for_name(w, name)
            if _is_false(wsub):
                continue  # the writer never sends it: closed content model
            sub = self.cmp(rsub, wsub, ppath)
            if not sub:
                continue
            if _is_true(wsub):
                out.append(
                    self.issue(
                        "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
                        ppath,
                        f"The {self.rl} schema adds property '{name}' at path '{ppath}', but the "
                        f"{self.wl} schema has an open content model, so old data may hold "
                        f"'{name}' with any value",
                    )
                )
            else:
                out.append(
                    self.issue(
                        "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                        ppath,
                        f"The {self.rl} schema adds property '{name}' at path '{ppath}' that "
                        f"rejects values the {self.wl} schema's additional properties allow",
                    )
                )
                out.extend(sub)
        for name, wsub in wprops.items():
            if name in rprops:
                continue
            ppath = f"{path}/properties/{name}"
            rsub = self._for_name(r, name)
            if _is_true(rsub):
                continue  # open content model: the removed property is still accepted
            if _is_false(rsub):
                out.append(
                    self.issue(
                        "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
                        ppath,
                        f"The {self.rl} schema removes property '{name}' at path '{ppath}' and has "
                        f"a closed content model, so it rejects data holding '{name}'",
                    )
                )
                continue
            sub = self.cmp(rsub, wsub, ppath)
            if sub:
                out.append(
                    self.issue(
                        "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                        ppath,
                        f"The {self.rl} schema removes property '{name}' at path '{ppath}' and its "
                        f"additional properties reject what the {self.wl} schema allowed",
                    )
                )
                out.extend(sub)
        radd, wadd = self._additional(r), self._additional(w)
        if not _is_false(wadd):
            if _is_false(radd):
                out.append(
                    self.issue(
                        "ADDITIONAL_PROPERTIES_REMOVED",
                        f"{path}/additionalProperties",
                        f"The {self.rl} schema closes the content model at path '{path}' "
                        f"(additionalProperties: false); the {self.wl} schema allowed other "
                        "properties",
                    )
                )
            else:
                out.extend(self.cmp(radd, wadd, f"{path}/additionalProperties"))
        for pattern, rsub in (r.get("patternProperties") or {}).items():
            wsub = (w.get("patternProperties") or {}).get(pattern, wadd)
            out.extend(self.cmp(rsub, wsub, f"{path}/patternProperties/{pattern}"))
        out.extend(self.dependencies(r, w, path))
        return out

    def dependencies(
        self, r: dict[str, Any], w: dict[str, Any], path: str
    ) -> list[Incompatibility]:
        out: list[Incompatibility] = []
        for key in ("dependentRequired", "dependencies"):
            rdeps = r.get(key) or {}
            wdeps = w.get(key) or {}
            for prop, needs in rdeps.items():
                have = wdeps.get(prop)
                if isinstance(needs, list):
                    if not isinstance(have, list) or not set(needs) <= set(have):
                        out.append(
                            self.issue(
                                "DEPENDENCY_ARRAY_EXTENDED",
                                f"{path}/{key}/{prop}",
                                f"The {self.rl} schema adds dependencies of '{prop}' at path "
                                f"'{path}/{key}'",
                            )
                        )
                elif have is None:
                    out.append(
                        self.issue(
                            "DEPENDENCY_SCHEMA_ADDED",
                            f"{path}/{key}/{prop}",
                            f"The {self.rl} schema adds a dependency schema for '{prop}' at path "
                            f"'{path}/{key}'",
                        )
                    )
                else:
                    out.extend(self.cmp(needs, have, f"{path}/{key}/{prop}"))
        return out

    # ------------------------------------------------------------------- arrays

    @staticmethod
    def _tuple(s: dict[str, Any]) -> tuple[list[Any] | None, Any]:
        """(positional item schemas or None, schema for the remaining items)."""
        if isinstance(s.get("prefixItems"), list):
            return s["prefixItems"], s.get("items", True)
        if isinstance(s.get("items"), list):
            return s["items"], s.get("additionalItems", True)
        return None, s.get("items", True)

    def arrays(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[Incompatibility]:
        rpos, rrest = self._tuple(r)
        wpos, wrest = self._tuple(w)
        if rpos is None and wpos is None:
            return self.cmp(rrest, wrest, f"{path}/items")
        out: list[Incompatibility] = []
        rp, wp = rpos or [], wpos or []
        for i in range(max(len(rp), len(wp))):
            rs = rp[i] if i < len(rp) else rrest
            ws = wp[i] if i < len(wp) else wrest
            out.extend(self.cmp(rs, ws, f"{path}/items/{i}"))
        out.extend(self.cmp(rrest, wrest, f"{path}/additionalItems"))
        return out
