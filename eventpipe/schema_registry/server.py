"""The Confluent-compatible REST API (``application/vnd.schemaregistry.v1+json``).

Mounted by the service under ``/schema-registry/`` (:func:`install`), or served
alone at the root (:func:`build_registry_app`, ``eventpipe schema-registry serve``).
Errors are Confluent's ``{"error_code": N, "message": "..."}`` bodies, so
existing clients (confluent-kafka's ``SchemaRegistryClient``, Karapace tools)
work unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from eventpipe.route_docs import RouteDoc

from .errors import BadRequest, InvalidSchema, RegistryError
from .models import CONTENT_TYPE, PREFIX, SCHEMA_TYPES, Schema, SchemaReference
from .registry import SchemaRegistry

if TYPE_CHECKING:
    from eventpipe.context import Context

log = logging.getLogger("eventpipe.schema_registry")
REGISTRY = web.AppKey("schema_registry", SchemaRegistry)
MAX_BODY_BYTES = 16 * 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=CONTENT_TYPE)


def error_reply(status: int, error_code: int, message: str) -> web.Response:
    return reply({"error_code": error_code, "message": message}, status)


@web.middleware
async def confluent_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as exc:
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc, exc_info=exc.__cause__)
        return error_reply(exc.status, exc.error_code, exc.message)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_reply(exc.status, exc.status, f"HTTP {exc.status} {exc.reason}")
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_reply(500, 500, "an internal error occurred; see the service log")


def _registry(request: web.Request) -> SchemaRegistry:
    return request.app[REGISTRY]


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("true", "1", "yes")


def _page(request: web.Request, items: list[Any]) -> list[Any]:
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "-1"))
    except ValueError as exc:
        raise BadRequest("offset and limit must be integers") from exc
    items = items[max(offset, 0) :]
    return items if limit < 0 else items[:limit]


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _schema_from(body: dict[str, Any]) -> Schema:
    text = body.get("schema")
    if not isinstance(text, str) or not text.strip():
        raise InvalidSchema("Empty schema" if text in (None, "") else "'schema' must be a string")
    schema_type = body.get("schemaType") or "AVRO"
    if not isinstance(schema_type, str) or schema_type.upper() not in SCHEMA_TYPES:
        raise InvalidSchema(
            f"schema type {schema_type!r} is not supported; use one of {', '.join(SCHEMA_TYPES)}"
        )
    refs_raw = body.get("references") or []
    if not isinstance(refs_raw, list):
        raise InvalidSchema("'references' must be an array of {name, subject, version}")
    refs: list[SchemaReference] = []
    for i, r in enumerate(refs_raw):
        try:
            if not isinstance(r, dict) or isinstance(r.get("version"), bool):
                raise TypeError
            refs.append(SchemaReference.from_dict(r))
        except (KeyError, TypeError, ValueError):
            raise InvalidSchema(
                f"references[{i}] must be an object with name, subject and version"
            ) from None
    return Schema(text, schema_type.upper(), tuple(refs))


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None or value == -1:  # -1: not given (Confluent's clients send it so)
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"'{key}' must be an integer")
    return value


def _schema_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound() from None


# ---------------------------------------------------------------------- handlers


async def root(request: web.Request) -> web.Response:
    return reply({})


async def schema_types(request: web.Request) -> web.Response:
    return reply(list(SCHEMA_TYPES))


async def contexts(request: web.Request) -> web.Response:
    return reply(["."])


async def schema_by_id(request: web.Request) -> web.Response:
    schema = await _registry(request).schema_by_id(_schema_id(request))
    return reply(schema.to_dict())


async def schema_text_by_id(request: web.Request) -> web.Response:
    schema = await _registry(request).schema_by_id(_schema_id(request))
    return web.Response(body=schema.schema.encode(), content_type=CONTENT_TYPE)


async def schema_versions(request: web.Request) -> web.Response:
    pairs = await _registry(request).schema_versions(
        _schema_id(request),
        deleted=_flag(request, "deleted"),
        subject=request.query.get("subject"),
    )
    return reply(_page(request, [{"subject": s, "version": v} for s, v in pairs]))


async def schema_subjects(request: web.Request) -> web.Response:
    pairs = await _registry(request).schema_versions(
        _schema_id(request),
        deleted=_flag(request, "deleted"),
        subject=request.query.get("subject"),
    )
    return reply(_page(request, list(dict.fromkeys(s for s, _ in pairs))))


async def list_subjects(request: web.Request) -> web.Response:
    q = request.query
    names = await _registry(request).subjects(
        deleted=_flag(request, "deleted"),
        deleted_only=_flag(request, "deletedOnly") or _flag(request, "deleted_only"),
        prefix=q.get("subjectPrefix") or q.get("subject_prefix") or "",
    )
    return reply(_page(request, names))


async def list_versions(request: web.Request) -> web.Response:
    versions = await _registry(request).versions(
        request.match_info["subject"], deleted=_flag(request, "deleted")
    )
    return reply(_page(request, versions))


async def register(request: web.Request) -> web.Response:
    body = await _body(request)
    reg = await _registry(request).register(
        request.match_info["subject"],
        _schema_from(body),
        schema_id=_optional_int(body, "id"),
        version=_optional_int(body, "version"),
    )
    return reply({"id": reg.id})


async def lookup(request: web.Request) -> web.Response:
    body = await _body(request)
    reg = await _registry(request).lookup(
        request.match_info["subject"], _schema_from(body), deleted=_flag(request, "deleted")
    )
    return reply(reg.to_dict())


async def get_version(request: web.Request) -> web.Response:
    reg = await _registry(request).get_version(
        request.match_info["subject"],
        request.match_info["version"],
        deleted=_flag(request, "deleted"),
    )
    return reply(reg.to_dict())


async def get_version_schema(request: web.Request) -> web.Response:
    reg = await _registry(request).get_version(
        request.match_info["subject"],
        request.match_info["version"],
        deleted=_flag(request, "deleted"),
    )
    return web.Response(body=reg.schema.schema.encode(), content_type=CONTENT_TYPE)


async def referenced_by(request: web.Request) -> web.Response:
    ids = await _registry(request).referenced_by(
        request.match_info["subject"], request.match_info["version"]
    )
    return reply(_page(request, ids))


async def delete_subject(request: web.Request) -> web.Response:
    versions = await _registry(request).delete_subject(
        request.match_info["subject"], permanent=_flag(request, "permanent")
    )
    return reply(versions)


async def delete_version(request: web.Request) -> web.Response:
    version = await _registry(request).delete_version(
        request.match_info["subject"],
        request.match_info["version"],
        permanent=_flag(request, "permanent"),
    )
    return reply(version)


async def compatibility(request: web.Request) -> web.Response:
    body = await _body(request)
    result = await _registry(request).check_compatibility(
        request.match_info["subject"], _schema_from(body), request.match_info.get("version")
    )
    out: dict[str, Any] = {"is_compatible": result.is_compatible}
    if _flag(request, "verbose"):
        out["messages"] = list(result.messages)
    return reply(out)


def _level_from(body: dict[str, Any]) -> object:
    return body.get("compatibility", body.get("compatibilityLevel"))


async def get_config(request: web.Request) -> web.Response:
    level = await _registry(request).get_compatibility(
        request.match_info.get("subject"), default_to_global=_flag(request, "defaultToGlobal")
    )
    return reply({"compatibilityLevel": level})


async def put_config(request: web.Request) -> web.Response:
    body = await _body(request)
    level = await _registry(request).set_compatibility(
        request.match_info.get("subject"), _level_from(body)
    )
    return reply({"compatibility": level})


async def delete_config(request: web.Request) -> web.Response:
    level = await _registry(request).delete_compatibility(request.match_info.get("subject"))
    return reply({"compatibilityLevel": level})


async def get_mode(request: web.Request) -> web.Response:
    mode = await _registry(request).get_mode(
        request.match_info.get("subject"), default_to_global=_flag(request, "defaultToGlobal")
    )
    return reply({"mode": mode})


async def put_mode(request: web.Request) -> web.Response:
    body = await _body(request)
    mode = await _registry(request).set_mode(
        request.match_info.get("subject"), body.get("mode"), force=_flag(request, "force")
    )
    return reply({"mode": mode})


async def delete_mode(request: web.Request) -> web.Response:
    mode = await _registry(request).delete_mode(request.match_info["subject"])
    return reply({"mode": mode})


ROUTES = (
    RouteDoc("GET", "/", "an empty object: the registry answers (Confluent's root)"),
    RouteDoc("GET", "/schemas/types", "the schema types it takes: AVRO, JSON"),
    RouteDoc("GET", "/contexts", 'the schema contexts: only the default one, "."'),
    RouteDoc("GET", "/schemas/ids/{id}", "a schema by its global id"),
    RouteDoc("GET", "/schemas/ids/{id}/schema", "a schema's text alone, by its global id"),
    RouteDoc("GET", "/schemas/ids/{id}/versions", "the (subject, version) pairs that use an id"),
    RouteDoc("GET", "/schemas/ids/{id}/subjects", "the subjects that use an id"),
    RouteDoc("GET", "/subjects", "the subjects (`?deleted=true`, `?subjectPrefix=`)"),
    RouteDoc(
        "POST", "/subjects/{subject}", "look a schema up: is it registered under the subject?"
    ),
    RouteDoc(
        "DELETE", "/subjects/{subject}", "delete a subject (`?permanent=true` after a soft delete)"
    ),
    RouteDoc("GET", "/subjects/{subject}/versions", "a subject's version numbers"),
    RouteDoc(
        "POST",
        "/subjects/{subject}/versions",
        "register a schema under a subject (checked for compatibility)",
    ),
    RouteDoc("GET", "/subjects/{subject}/versions/{version}", "one version (a number or `latest`)"),
    RouteDoc("DELETE", "/subjects/{subject}/versions/{version}", "delete one version"),
    RouteDoc(
        "GET", "/subjects/{subject}/versions/{version}/schema", "one version's schema text alone"
    ),
    RouteDoc(
        "GET",
        "/subjects/{subject}/versions/{version}/referencedby",
        "ids of the schemas that reference this version",
    ),
    RouteDoc(
        "POST",
        "/compatibility/subjects/{subject}/versions",
        "would a schema be compatible with the versions the subject's level names? "
        "(`?verbose=true`: why not)",
    ),
    RouteDoc(
        "POST",
        "/compatibility/subjects/{subject}/versions/{version}",
        "would a schema be compatible with this version?",
    ),
    RouteDoc("GET", "/config", "the global compatibility level"),
    RouteDoc("PUT", "/config", "set the global compatibility level"),
    RouteDoc(
        "DELETE", "/config", "drop the global compatibility level: the default (BACKWARD) applies"
    ),
    RouteDoc(
        "GET", "/config/{subject}", "a subject's compatibility level (`?defaultToGlobal=true`)"
    ),
    RouteDoc("PUT", "/config/{subject}", "set a subject's compatibility level"),
    RouteDoc("DELETE", "/config/{subject}", "drop a subject's level: the global one applies"),
    RouteDoc("GET", "/mode", "the global mode (READWRITE, READONLY, IMPORT)"),
    RouteDoc("PUT", "/mode", "set the global mode"),
    RouteDoc("GET", "/mode/{subject}", "a subject's mode"),
    RouteDoc("PUT", "/mode/{subject}", "set a subject's mode (`?force=true`)"),
    RouteDoc("DELETE", "/mode/{subject}", "drop a subject's mode: the global one applies"),
)
"""The registry's routes at its own root (the service mounts them under PREFIX)."""


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", root, name="sr.root")
    r.add_get("/schemas/types", schema_types, name="sr.schema_types")
    r.add_get("/contexts", contexts, name="sr.contexts")
    r.add_get("/schemas/ids/{id}", schema_by_id, name="sr.schema")
    r.add_get("/schemas/ids/{id}/schema", schema_text_by_id, name="sr.schema_text")
    r.add_get("/schemas/ids/{id}/versions", schema_versions, name="sr.schema_versions")
    r.add_get("/schemas/ids/{id}/subjects", schema_subjects, name="sr.schema_subjects")
    r.add_get("/subjects", list_subjects, name="sr.subjects")
    r.add_post("/subjects/{subject}", lookup, name="sr.lookup")
    r.add_delete("/subjects/{subject}", delete_subject, name="sr.delete_subject")
    r.add_get("/subjects/{subject}/versions", list_versions, name="sr.versions")
    r.add_post("/subjects/{subject}/versions", register, name="sr.register")
    r.add_get("/subjects/{subject}/versions/{version}", get_version, name="sr.version")
    r.add_delete("/subjects/{subject}/versions/{version}", delete_version, name="sr.delete_version")
    r.add_get(
        "/subjects/{subject}/versions/{version}/schema",
        get_version_schema,
        name="sr.version_schema",
    )
    r.add_get(
        "/subjects/{subject}/versions/{version}/referencedby",
        referenced_by,
        name="sr.referenced_by",
    )
    r.add_post(
        "/compatibility/subjects/{subject}/versions", compatibility, name="sr.compatibility_all"
    )
    r.add_post(
        "/compatibility/subjects/{subject}/versions/{version}",
        compatibility,
        name="sr.compatibility",
    )
    for path, suffix in (("/config", ""), ("/config/{subject}", "_subject")):
        r.add_get(path, get_config, name=f"sr.get_config{suffix}")
        r.add_put(path, put_config, name=f"sr.put_config{suffix}")
        r.add_delete(path, delete_config, name=f"sr.delete_config{suffix}")
    r.add_get("/mode", get_mode, name="sr.get_mode")
    r.add_put("/mode", put_mode, name="sr.put_mode")
    r.add_get("/mode/{subject}", get_mode, name="sr.get_mode_subject")
    r.add_put("/mode/{subject}", put_mode, name="sr.put_mode_subject")
    r.add_delete("/mode/{subject}", delete_mode, name="sr.delete_mode_subject")


def build_registry_app(
    pool: AsyncConnectionPool | Callable[[], AsyncConnectionPool | None],
) -> web.Application:
    """The registry as its own application, routes at its root."""
    app = web.Application(middlewares=[confluent_errors], client_max_size=MAX_BODY_BYTES)
    app[REGISTRY] = SchemaRegistry(pool)
    add_routes(app)
    return app


def install(app: web.Application, ctx: Context) -> None:
    """Mount the registry under ``/schema-registry/`` of the service, on ``ctx.pool``."""
    app.add_subapp(PREFIX + "/", build_registry_app(lambda: ctx.pool))
