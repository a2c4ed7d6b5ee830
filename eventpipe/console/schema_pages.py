"""The schema registry, read-only: ``/console/schemas`` (subjects),
``/console/schemas/{subject}`` (versions, one shown), ``.../diff?a=&b=`` (two
versions side by side as a unified diff) and ``.../check`` (is a pasted schema
compatible with the subject, by its level or against one version?).  Through
:class:`eventpipe.schema_registry.registry.SchemaRegistry`, so the answers are
those of ``/schema-registry/``."""

from __future__ import annotations

import difflib
from typing import Any

import orjson
from aiohttp import web

from eventpipe.console.access import route
from eventpipe.console.render import error, render
from eventpipe.console.state import console_of
from eventpipe.schema_registry.errors import RegistryError, SubjectNotFound
from eventpipe.schema_registry.models import SCHEMA_TYPES, RegisteredSchema, Schema
from eventpipe.schema_registry.registry import SchemaRegistry

MAX_SUBJECTS = 500  # subjects the list shows


def pretty_schema(text: str) -> str:
    """A schema's text indented (Avro and JSON Schema are JSON; member order kept)."""
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text


def _diff(a: RegisteredSchema, b: RegisteredSchema) -> list[str]:
    return list(
        difflib.unified_diff(
            pretty_schema(a.schema.schema).splitlines(),
            pretty_schema(b.schema.schema).splitlines(),
            f"version {a.version} (id {a.id})",
            f"version {b.version} (id {b.id})",
            n=3,
            lineterm="",
        )
    )


async def subjects_page(request: web.Request) -> web.Response:
    registry = console_of(request).registry
    names = await registry.subjects(deleted=False, deleted_only=False, prefix="")
    rows = []
    for subject in names[:MAX_SUBJECTS]:
        try:
            latest = await registry.get_version(subject, "latest", deleted=False)
            versions = await registry.versions(subject, deleted=False)
        except SubjectNotFound:  # deleted since the list was read
            continue
        rows.append({"subject": subject, "latest": latest, "count": len(versions)})
    level = await registry.get_compatibility(None, default_to_global=True)
    return render(
        request,
        "schemas.html",
        rows=rows,
        total=len(names),
        shown_max=MAX_SUBJECTS,
        level=level,
    )


async def _subject_values(registry: SchemaRegistry, subject: str, version: str) -> dict[str, Any]:
    versions = await registry.versions(subject, deleted=False)
    current = await registry.get_version(subject, version or "latest", deleted=False)
    return {
        "subject": subject,
        "versions": versions,
        "current": current,
        "current_text": pretty_schema(current.schema.schema),
        "level": await registry.get_compatibility(subject, default_to_global=True),
        "schema_types": SCHEMA_TYPES,
        "check": None,
        "check_form": {"schema": "", "schema_type": current.schema.schema_type, "version": ""},
        "problem": None,
        "field": None,
        "diff": None,
        "a": None,
        "b": None,
    }


async def subject_page(request: web.Request) -> web.Response:
    registry = console_of(request).registry
    subject = request.match_info["subject"]
    try:
        values = await _subject_values(registry, subject, request.query.get("version", ""))
    except RegistryError as exc:
        return error(request, exc.status, "schema-registry", exc.message, field="version")
    return render(request, "schema_subject.html", **values)


async def diff_page(request: web.Request) -> web.Response:
    registry = console_of(request).registry
    subject = request.match_info["subject"]
    a, b = request.query.get("a", ""), request.query.get("b", "")
    try:
        values = await _subject_values(registry, subject, b)
    except RegistryError as exc:
        return error(request, exc.status, "schema-registry", exc.message, field="b")
    for name, given in (("a", a), ("b", b)):
        if not given:
            values["problem"], values["field"] = f"{name}: choose a version", name
            return render(request, "schema_subject.html", status=400, **values)
    try:
        old = await registry.get_version(subject, a, deleted=False)
    except RegistryError as exc:
        values["problem"], values["field"] = f"a: {exc.message}", "a"
        return render(request, "schema_subject.html", status=exc.status, **values)
    new = values["current"]
    values.update(diff=_diff(old, new), a=old, b=new)
    return render(request, "schema_subject.html", **values)


async def check(request: web.Request) -> web.Response:
    """Read-only: a compatibility check registers nothing."""
    registry = console_of(request).registry
    subject = request.match_info["subject"]
    form = await request.post()
    text = str(form.get("schema", ""))
    schema_type = str(form.get("schema_type", "AVRO")).upper()
    version = str(form.get("version", "")).strip()
    try:
        values = await _subject_values(registry, subject, "")
    except RegistryError as exc:
        return error(request, exc.status, "schema-registry", exc.message)
    values["check_form"] = {"schema": text, "schema_type": schema_type, "version": version}
    if not text.strip():
        values["problem"], values["field"] = "schema: paste the schema to check", "schema"
        return render(request, "schema_subject.html", status=400, **values)
    if schema_type not in SCHEMA_TYPES:
        values["problem"] = f"schema_type: one of {', '.join(SCHEMA_TYPES)}"
        values["field"] = "schema_type"
        return render(request, "schema_subject.html", status=400, **values)
    try:
        result = await registry.check_compatibility(
            subject, Schema(text, schema_type), version or None
        )
    except RegistryError as exc:
        values["problem"], values["field"] = exc.message, "schema"
        return render(request, "schema_subject.html", status=exc.status, **values)
    values["check"] = {
        "compatible": result.is_compatible,
        "messages": list(result.messages),
        "against": f"version {version}" if version else f"the subject's level ({values['level']})",
    }
    return render(request, "schema_subject.html", **values)


ROUTES = (
    route("GET", "/schemas", "the registry's subjects"),
    route("GET", "/schemas/{subject}", "a subject's versions and each version's schema"),
    route("GET", "/schemas/{subject}/diff", "a diff of two versions (`?a=1&b=2`)"),
    route(
        "POST",
        "/schemas/{subject}/check",
        "check a pasted schema's compatibility (registers nothing)",
    ),
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/schemas", subjects_page, name="console.schemas")
    app.router.add_get("/schemas/{subject}", subject_page, name="console.schema_subject")
    app.router.add_get("/schemas/{subject}/diff", diff_page, name="console.schema_diff")
    app.router.add_post("/schemas/{subject}/check", check, name="console.schema_check")
