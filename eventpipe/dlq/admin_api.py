"""The DLQ operations over HTTP: ``/v1/dlq/...`` on the service, behind a bearer
token (``service.admin_token``).  Without a token configured the API is off."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiohttp import web

from eventpipe.context import Context
from eventpipe.dlq.ops import Dlq, DlqError, resolve_topics, stats
from eventpipe.dlq.query import FilterError, Filters, parse_when
from eventpipe.kafka.incarnation import TopicResetError
from eventpipe.problem import problem
from eventpipe.route_docs import ADMIN_TOKEN, RouteDoc

API_USER = "admin-api"  # who a replay or discard is recorded as without "by"
_FILTER_KEYS = (
    "pipeline",
    "topic",
    "since",
    "until",
    "exception",
    "stage",
    "where",
    "limit",
    "include_discarded",
)


def _authorized(request: web.Request, ctx: Context) -> web.Response | None:
    token = ctx.settings.service.admin_token
    if token is None:
        return problem(
            403,
            "admin-disabled",
            "the admin API is off; set service.admin_token (EVENTPIPE_SERVICE_ADMIN_TOKEN)",
        )
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return problem(
            401,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` is required",
            headers={"WWW-Authenticate": 'Bearer realm="eventpipe-admin"'},
        )
    return None


def filters_from(params: dict[str, Any]) -> Filters:
    """Filters from query parameters or a JSON body (errors name the parameter)."""

    def when(name: str) -> Any:
        v = params.get(name)
        return parse_when(str(v), name) if v else None

    limit = params.get("limit")
    try:
        limit_n = int(limit) if limit not in (None, "") else None
    except (TypeError, ValueError):
        raise FilterError("limit", "must be a whole number") from None
    return Filters(
        pipeline=params.get("pipeline") or None,
        since=when("since"),
        until=when("until"),
        exception=params.get("exception") or None,
        stage=params.get("stage") or None,
        where=params.get("where") or None,
        limit=limit_n,
        include_discarded=str(params.get("include_discarded", "")).lower() in ("1", "true"),
    )


def _topics(params: dict[str, Any]) -> list[str] | None:
    t = params.get("topic")
    if not t:
        return None
    return [t] if isinstance(t, str) else list(t)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FilterError("body", f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise FilterError("body", "must be a JSON object")
    return doc


def _guard(handler: Any, ctx: Context) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        denied = _authorized(request, ctx)
        if denied is not None:
            return denied
        assert ctx.pool is not None
        try:
            return await handler(request, ctx, Dlq(ctx.settings, ctx.pool))
        except FilterError as exc:
            return problem(400, "bad-filter", str(exc), field=exc.flag, reason=str(exc))
        except DlqError as exc:
            return problem(422, "dlq", str(exc))
        except TopicResetError as exc:  # the ledger of an earlier dead-letter topic
            return problem(409, "topic-reset", str(exc))

    return wrapped


async def list_dead_letters(request: web.Request, ctx: Context, dlq: Dlq) -> web.Response:
    params = dict(request.query)
    filters = filters_from(params)
    topics = await resolve_topics(ctx.settings, filters.pipeline, _topics(params))
    entries = await dlq.select(topics, filters)
    return web.json_response({"items": [e.to_doc() for e in entries]}, dumps=_dumps)


async def dlq_stats(request: web.Request, ctx: Context, dlq: Dlq) -> web.Response:
    params = dict(request.query)
    filters = filters_from(params)
    topics = await resolve_topics(ctx.settings, filters.pipeline, _topics(params))
    return web.json_response(stats(await dlq.select(topics, filters)), dumps=_dumps)


async def show(request: web.Request, ctx: Context, dlq: Dlq) -> web.Response:
    params = dict(request.query)
    topics = await resolve_topics(ctx.settings, params.get("pipeline"), _topics(params))
    entry = await dlq.find(topics, request.match_info["ref"])
    if entry is None:
        return problem(404, "not-found", f"no dead letter {request.match_info['ref']!r}")
    return web.json_response(entry.to_doc(full=True), dumps=_dumps)


async def replay(request: web.Request, ctx: Context, dlq: Dlq) -> web.Response:
    body = await _body(request)
    filters = filters_from({k: body.get(k) for k in _FILTER_KEYS})
    topics = await resolve_topics(ctx.settings, filters.pipeline, _topics(body))
    entries = await dlq.select(topics, filters)
    report = await dlq.replay(
        topics,
        entries,
        to=body.get("to"),
        patch=body.get("patch"),
        dry_run=bool(body.get("dry_run")),
        rate=body.get("rate"),
        force=bool(body.get("force")),
        who=_text(body, "by") or API_USER,
        reason=_text(body, "reason"),
    )
    return web.json_response(
        {
            "replayed": report.replayed,
            "skipped_replayed": report.skipped_replayed,
            "failed": [{"ref": r, "reason": why} for r, why in report.failed],
            "planned": report.planned,
        },
        dumps=_dumps,
    )


async def discard(request: web.Request, ctx: Context, dlq: Dlq) -> web.Response:
    body = await _body(request)
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        return problem(
            400, "bad-request", "reason is required", field="reason", reason="required, non-empty"
        )
    filters = filters_from({k: body.get(k) for k in _FILTER_KEYS})
    topics = await resolve_topics(ctx.settings, filters.pipeline, _topics(body))
    who = _text(body, "by") or API_USER
    n = await dlq.discard(await dlq.select(topics, filters), reason, who)
    return web.json_response({"discarded": n})


def _text(body: dict[str, Any], key: str) -> str | None:
    """An optional string member of the body (``by``, ``reason``): 400 otherwise."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FilterError(key, "must be a string")
    return value.strip() or None


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


ROUTES = (
    RouteDoc(
        "GET",
        "/v1/dlq",
        "dead letters matching the query's filters (pipeline, topic, since, until, exception, "
        "stage, limit, ...)",
        ADMIN_TOKEN,
    ),
    RouteDoc("GET", "/v1/dlq/stats", "counts by pipeline, stage and exception class", ADMIN_TOKEN),
    RouteDoc(
        "POST",
        "/v1/dlq/replay",
        "replay the dead letters a JSON body selects (filters, patch, to, dry_run, force, "
        "reason, by)",
        ADMIN_TOKEN,
    ),
    RouteDoc(
        "POST",
        "/v1/dlq/discard",
        "mark the dead letters a JSON body selects as dealt with (reason required)",
        ADMIN_TOKEN,
    ),
    RouteDoc(
        "GET",
        "/v1/dlq/{ref}",
        "one dead letter (topic:partition:offset or event id): headers, error, payload",
        ADMIN_TOKEN,
    ),
)


def install(app: web.Application, ctx: Context) -> None:
    app.router.add_get("/v1/dlq", _guard(list_dead_letters, ctx), name="dlq-list")
    app.router.add_get("/v1/dlq/stats", _guard(dlq_stats, ctx), name="dlq-stats")
    app.router.add_post("/v1/dlq/replay", _guard(replay, ctx), name="dlq-replay")
    app.router.add_post("/v1/dlq/discard", _guard(discard, ctx), name="dlq-discard")
    app.router.add_get("/v1/dlq/{ref}", _guard(show, ctx), name="dlq-show")
