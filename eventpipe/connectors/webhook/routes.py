"""Wiring: the ``POST /webhooks/{name}`` route of every webhook source (started and
stopped with the application) and the load-time check that names fit in a URL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from eventpipe.context import Context
from eventpipe.http_body import decodes_content_encoding
from eventpipe.preflight import Problem, Reach, source_entries, topic_problems
from eventpipe.schema_registry.lookup import subject_problems
from eventpipe.settings import Settings

from .config import WebhookConfig
from .producer import BatchProducer
from .rejects import Reject
from .source import WebhookSource

log = logging.getLogger("eventpipe.webhook")
_URL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def webhook_entries(settings: Settings) -> list[tuple[str, WebhookConfig]]:
    out = []
    for entry in settings.sources:
        if entry.get("type") == "webhook":
            cfg = {k: v for k, v in entry.items() if k not in ("type", "name")}
            out.append((str(entry["name"]), WebhookConfig.model_validate(cfg)))
    return out


def install(app: web.Application, ctx: Context) -> None:
    """Route installer: ``POST /webhooks/{name}`` per webhook source, started and
    stopped with the application."""
    entries = webhook_entries(ctx.settings)
    if not entries:
        return
    kafka = ctx.settings.kafka
    webhooks = [
        WebhookSource(
            cfg, name=n, ctx=ctx, producer=BatchProducer(kafka, timeout_s=cfg.publish_timeout_s)
        )
        for n, cfg in entries
    ]

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        started: list[WebhookSource] = []
        try:
            for source in webhooks:
                started.append(source)
                await source.producer.start()
                await source.start()
            yield
        finally:
            for source in reversed(started):
                try:
                    await source.stop()
                except Exception:
                    log.exception("stopping webhook source %s failed", source.name)
                await source.producer.stop()

    app.cleanup_ctx.append(lifecycle)
    by_name = {source.name: source for source in webhooks}

    @decodes_content_encoding  # gzip and deflate bodies, within max_body_bytes
    async def dispatch(request: web.Request) -> web.StreamResponse:
        source = by_name.get(request.match_info["name"])
        if source is None:
            return Reject(
                404, "not-found", f"no webhook source named {request.match_info['name']!r}"
            ).response("")
        return await source.handle(request)

    app.router.add_post("/webhooks/{name}", dispatch, name="webhooks")


def check_names(settings: Settings) -> list[tuple[str, str]]:
    problems = []
    for i, entry in enumerate(settings.sources):
        name = entry.get("name")
        is_webhook = entry.get("type") == "webhook" and isinstance(name, str) and name
        if is_webhook and (not set(str(name)) <= _URL_SAFE or len(str(name)) > 100):
            problems.append(
                (
                    f"sources[{i}].name",
                    "a webhook name is part of its URL: use letters, digits, "
                    "'.', '_' and '-' (at most 100)",
                )
            )
    return problems


async def check_webhooks(reach: Reach) -> list[Problem]:
    """Start-time checks: each webhook's topic exists (or will be created) and the
    subject it validates bodies against is registered."""
    problems: list[Problem] = []
    for i, cfg in source_entries(reach.settings, "webhook", WebhookConfig):
        problems.extend(await topic_problems(reach, [(f"sources[{i}].topic", cfg.topic)]))
        v = cfg.validate_
        if v is not None and v.subject is not None:
            problems.extend(
                await subject_problems(
                    reach,
                    [(f"sources[{i}].validate.subject", v.subject, v.version)],
                    registry_url=cfg.registry_url,
                )
            )
    return problems
