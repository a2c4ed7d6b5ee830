"""The dead-letter browser: ``/console/dlq`` (filter and list), ``/console/dlq/{ref}``
(one record: payload, headers, error, history; patch preview), and its actions,
replay (with dry run) and discard.

Everything goes through :class:`eventpipe.dlq.ops.Dlq`, so the rules and the
ledger are those of ``eventpipe dlq`` and ``/v1/dlq``: a record is replayed once
unless forced, a patch must keep the event's id and source, a discard needs a
reason, discarded records are not replayed.  The console adds that a replay needs
a reason too, and records who did it.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiMapping

from eventpipe.console import audit
from eventpipe.console.access import action, route, see_other
from eventpipe.console.redact import Redactor
from eventpipe.console.render import error, render
from eventpipe.console.state import Console, console_of, session_of
from eventpipe.dlq.admin_api import filters_from
from eventpipe.dlq.ops import Dlq, DlqError, Ledgers, patch_event, pipeline_dlq_topic
from eventpipe.dlq.query import FilterError, parse_ref
from eventpipe.dlq.reader import Entry
from eventpipe.dlq.record import STAGES
from eventpipe.kafka.incarnation import TopicResetError

log = logging.getLogger(__name__)
SHOWN = 100  # records a list page shows by default (the newest)
MAX_SHOWN = 1000
FILTER_FIELDS = ("pipeline", "topic", "stage", "exception", "since", "until")
_NOTICES = {
    "replayed": "Replayed: the record went back to its topic (see its history below).",
    "discarded": "Discarded: the record is hidden from lists and will not be replayed.",
}


# ------------------------------------------------------------------ views


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def shown(entry: Entry, red: Redactor) -> dict[str, Any]:
    """A record as a page shows it: secrets masked, the rest as it is."""
    d = entry.letter
    event = red.doc(entry.event) if entry.event is not None else None
    headers = []
    for name, raw in d.headers:
        value, masked = red.header(name, raw.decode("utf-8", "replace"))
        headers.append({"name": name, "value": value, "masked": masked})
    value_text = None
    if event is None and d.value is not None:
        value_text = red.text(d.value.decode("utf-8", "replace"))
    return {
        "ref": entry.ref,
        "topic": entry.topic,
        "partition": entry.partition,
        "offset": entry.offset,
        "failed_at": entry.failed_at,
        "first_failed_at": d.first_failed_at,
        "pipeline": d.pipeline,
        "stage": d.stage,
        "step": d.step,
        "attempts": d.attempts,
        "retriable": d.retriable,
        "origin": d.origin,
        "exception_class": d.exception_class,
        "exception_short": d.exception_class.rsplit(".", 1)[-1],
        "message": red.text(d.exception_message),
        "stacktrace": red.text(d.stacktrace),
        "event_id": entry.event_id,
        "event_type": entry.event_type,
        "event": event,
        "event_text": _pretty(event) if event is not None else None,
        "value_text": value_text,
        "key": red.text(d.key.decode("utf-8", "replace")) if d.key is not None else None,
        "headers": headers,
        "http_status": d.http_status,
        "http_body": red.text(d.http_body) if d.http_body else None,
        "payload_ref": d.payload_ref,
        "payload_size": d.payload_size,
        "payload_missing": d.payload_ref is not None and d.value is None,
    }


def preview(entry: Entry, red: Redactor, patch: str) -> dict[str, Any]:
    """The patched event, computed on the record as shown (secrets masked, so a patch
    cannot copy one into view), and a unified diff against it.  Sends nothing."""
    if entry.event is None:
        raise DlqError(f"{entry.ref}: the value is not a CloudEvent, so a patch cannot apply")
    before = red.doc(entry.event)
    after = red.doc(patch_event(before, patch, entry.ref))
    a, b = _pretty(before), _pretty(after)
    diff = list(
        difflib.unified_diff(
            a.splitlines(), b.splitlines(), "recorded", "patched", n=3, lineterm=""
        )
    )
    return {"event": after, "text": b, "diff": diff, "changed": a != b}


def _status(entry: Entry, ledgers: Ledgers) -> str | None:
    ref = (entry.topic, entry.partition, entry.offset)
    if ref in ledgers.discarded:
        return "discarded"
    if ref in ledgers.replayed:
        return "replayed"
    return None


def entry_name(entry: Any) -> str | None:
    """A ``sources:`` entry's name: a typed entry (the service's config) or a mapping."""
    name = entry.get("name") if isinstance(entry, Mapping) else getattr(entry, "name", None)
    return str(name) if name else None


def _known_pipelines(console: Console, counts: Counter[str]) -> list[str]:
    names = {str(p.get("name")) for p in console.settings.pipelines if p.get("name")}
    names |= {n for s in console.settings.sources if (n := entry_name(s))}
    return sorted(names | {n for n in counts if n})


# ------------------------------------------------------------------- list


async def list_page(request: web.Request) -> web.Response:
    console = console_of(request)
    q = request.query
    form = {k: q.get(k, "").strip() for k in FILTER_FIELDS}
    form["include_discarded"] = "1" if q.get("include_discarded") else ""
    form["shown"] = q.get("shown", "").strip()
    existing = sorted(await console.ctx.admin.list_topics())
    dlq_topics = [t for t in existing if t.endswith(".dlq")]
    values: dict[str, Any] = {
        "form": form,
        "stages": STAGES,
        "dlq_topics": dlq_topics,
        "rows": [],
        "summary": None,
        "note": None,
        "problem": None,
        "field": None,
    }

    def page(status: int = 200, pipelines: Counter[str] | None = None) -> web.Response:
        values["pipelines"] = _known_pipelines(console, pipelines or Counter())
        return render(request, "dlq_list.html", status=status, **values)

    try:
        n = _shown(form["shown"])
        filters = filters_from({**form, "limit": None})
    except FilterError as exc:
        values["problem"], values["field"] = str(exc), exc.flag.lstrip("-")
        return page(400)
    if form["topic"]:
        if form["topic"] not in existing:
            values["problem"] = f"topic: no such topic {form['topic']!r}"
            values["field"] = "topic"
            return page(400)
        topics = [form["topic"]]
    elif form["pipeline"] and any(
        p.get("name") == form["pipeline"] for p in console.settings.pipelines
    ):
        own = pipeline_dlq_topic(console.settings, form["pipeline"])
        topics = [own] if own in existing else []
        if not topics:
            values["note"] = (
                f"Pipeline {form['pipeline']} has dead-lettered nothing yet: its dead-letter "
                f"topic {own} does not exist."
            )
    else:
        topics = dlq_topics
    if not topics:
        return page()
    dlq = Dlq(console.settings, console.pool)
    try:
        ledgers = await dlq.ledgers(topics)
        summary = await dlq.newest(topics, filters, n, ledgers)
    except TopicResetError as exc:
        values["problem"] = str(exc)
        return page(409)
    values["summary"] = summary
    values["rows"] = [
        {**shown(e, console.redactor), "status": _status(e, ledgers)} for e in summary.entries
    ]
    return page(pipelines=summary.by_pipeline)


def _shown(raw: str) -> int:
    if not raw:
        return SHOWN
    try:
        n = int(raw)
    except ValueError:
        raise FilterError("shown", "must be a whole number") from None
    if not 1 <= n <= MAX_SHOWN:
        raise FilterError("shown", f"must be between 1 and {MAX_SHOWN}")
    return n


# ----------------------------------------------------------------- record


class _Refused(Exception):
    def __init__(self, status: int, slug: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail, self.field = status, slug, detail, field


async def _load(request: web.Request) -> tuple[Dlq, Entry, Ledgers]:
    """The record the path names, and the ledgers of its topic."""
    console = console_of(request)
    ref = request.match_info["ref"]
    exact = parse_ref(ref)
    if exact is None:
        raise _Refused(
            404, "not-found", f"{ref!r} is not a dead letter's reference (topic:partition:offset)"
        )
    if exact[0] not in await console.ctx.admin.list_topics():
        raise _Refused(404, "not-found", f"no topic {exact[0]!r}")
    dlq = Dlq(console.settings, console.pool)
    try:
        ledgers = await dlq.ledgers([exact[0]])
    except TopicResetError as exc:
        raise _Refused(409, "topic-reset", str(exc)) from exc
    entry = await dlq.find([exact[0]], ref)
    if entry is None:
        raise _Refused(404, "not-found", f"no dead letter at {ref}")
    return dlq, entry, ledgers


async def _record_page(
    request: web.Request,
    dlq: Dlq,
    entry: Entry,
    ledgers: Ledgers,
    *,
    status: int = 200,
    patch: str = "",
    form: dict[str, str] | None = None,
    problem: str | None = None,
    field: str | None = None,
    dry_run: dict[str, Any] | None = None,
) -> web.Response:
    console = console_of(request)
    record = shown(entry, console.redactor)
    patched = None
    patch_problem = None
    if patch.strip():
        try:
            patched = preview(entry, console.redactor, patch)
        except DlqError as exc:
            patch_problem = str(exc)
            status = max(status, 400)
    history = [
        dataclasses.replace(
            h,
            reason=console.redactor.text(h.reason) if h.reason else None,
            patch=console.redactor.text(h.patch) if h.patch else None,
        )
        for h in await dlq.history((entry.topic, entry.partition, entry.offset))
    ]
    return render(
        request,
        "dlq_record.html",
        status=status,
        r=record,
        state=_status(entry, ledgers),
        history=history,
        patch=patch,
        patched=patched,
        patch_problem=patch_problem,
        form=form or {"to": "", "reason": "", "force": ""},
        problem=problem,
        field=field,
        dry_run=dry_run,
        notice=_NOTICES.get(request.query.get("done", "")),
    )


async def record_page(request: web.Request) -> web.Response:
    try:
        dlq, entry, ledgers = await _load(request)
    except _Refused as r:
        return error(request, r.status, r.slug, r.detail, field=r.field)
    return await _record_page(request, dlq, entry, ledgers, patch=request.query.get("patch", ""))


async def preview_api(request: web.Request) -> web.Response:
    """``GET /console/api/dlq/{ref}/preview?patch=JQ``: the patched event as JSON."""
    console = console_of(request)
    try:
        _, entry, _ = await _load(request)
    except _Refused as r:
        return error(request, r.status, r.slug, r.detail, field=r.field)
    patch = request.query.get("patch", "")
    try:
        result = preview(entry, console.redactor, patch)
    except DlqError as exc:
        return error(request, 400, "bad-patch", str(exc), field="patch")
    return web.json_response(result, dumps=lambda o: orjson.dumps(o).decode())


def _fields(post: MultiMapping[Any]) -> dict[str, str]:
    return {
        k: str(post.get(k, "")).strip() if k != "patch" else str(post.get(k, ""))
        for k in ("patch", "to", "reason", "force", "mode")
    }


async def _acting(request: web.Request) -> tuple[Console, str, dict[str, str]]:
    """What every action starts from: the console, who is acting, the form."""
    session = session_of(request)
    assert session is not None, "access.guard lets no action through without a login"
    return console_of(request), session.who, _fields(await request.post())


@action
async def replay(request: web.Request) -> web.Response:
    console, who, form = await _acting(request)
    dry = form["mode"] == "dry-run"
    try:
        dlq, entry, ledgers = await _load(request)
    except _Refused as r:
        return error(request, r.status, r.slug, r.detail, field=r.field)

    def refused(status: int, why: str, field: str | None = None) -> Any:
        return _record_page(
            request,
            dlq,
            entry,
            ledgers,
            status=status,
            patch=form["patch"],
            form=form,
            problem=why,
            field=field,
        )

    if not dry and not form["reason"]:
        return await refused(400, "reason: say why you replay it (recorded)", "reason")
    if form["patch"].strip():  # checked before anything is sent
        try:
            if entry.event is None:
                raise DlqError(
                    f"{entry.ref}: the value is not a CloudEvent, so a patch cannot apply"
                )
            patch_event(entry.event, form["patch"], entry.ref)
        except DlqError as exc:
            return await refused(400, str(exc), "patch")
    if form["to"] and form["to"] not in await console.ctx.admin.list_topics():
        return await refused(400, f"to: no such topic {form['to']!r}", "to")
    if _status(entry, ledgers) == "discarded":
        return await refused(409, "this record was discarded; discarded records are not replayed")
    kwargs: dict[str, Any] = {
        "to": form["to"] or None,
        "patch": form["patch"] if form["patch"].strip() else None,
        "force": form["force"] == "1",
    }
    topics = [entry.topic]
    if dry:
        report = await dlq.replay(topics, [entry], dry_run=True, **kwargs)
        planned = [{**p, "value": console.redactor.doc(p["value"])} for p in report.planned]
        result = {
            "planned": planned,
            "skipped": report.skipped_replayed,
            "failed": report.failed,
        }
        return await _record_page(
            request, dlq, entry, ledgers, patch=form["patch"], form=form, dry_run=result
        )
    detail = {k: v for k, v in kwargs.items() if v}
    async with audit.recorded(
        console.pool, who, "dlq.replay", entry.ref, form["reason"], detail
    ) as action_id:
        report = await dlq.replay(topics, [entry], who=who, reason=form["reason"], **kwargs)
    if report.failed:
        why = "; ".join(f"{why}" for _, why in report.failed)
        await audit.finish(console.pool, action_id, f"failed: {why}")
        return await refused(422, f"not replayed: {why}")
    if report.skipped_replayed:
        await audit.finish(console.pool, action_id, "skipped: replayed before")
        return await refused(
            409, "already replayed; tick “replay again” (force) to send it once more", "force"
        )
    await audit.finish(console.pool, action_id, "ok", {"replayed": report.replayed})
    return see_other(f"/console/dlq/{entry.ref}?done=replayed")


@action
async def discard(request: web.Request) -> web.Response:
    console, who, form = await _acting(request)
    try:
        dlq, entry, ledgers = await _load(request)
    except _Refused as r:
        return error(request, r.status, r.slug, r.detail, field=r.field)
    if not form["reason"]:
        return await _record_page(
            request,
            dlq,
            entry,
            ledgers,
            status=400,
            form=form,
            problem="reason: say why you discard it (recorded)",
            field="discard-reason",
        )
    if _status(entry, ledgers) == "discarded":
        return await _record_page(
            request,
            dlq,
            entry,
            ledgers,
            status=409,
            form=form,
            problem="this record was discarded already",
        )
    async with audit.recorded(
        console.pool, who, "dlq.discard", entry.ref, form["reason"]
    ) as action_id:
        await dlq.discard([entry], form["reason"], who)
    await audit.finish(console.pool, action_id, "ok")
    return see_other(f"/console/dlq/{entry.ref}?done=discarded")


ROUTES = (
    route("GET", "/dlq", "dead letters, newest first, filtered; counts by pipeline, stage, error"),
    route("GET", "/dlq/{ref}", "one dead letter: error, payload, headers, history; patch, replay"),
    route(
        "POST", "/dlq/{ref}/replay", "replay the record (patched, dry run, to a topic)", "action"
    ),
    route("POST", "/dlq/{ref}/discard", "discard the record, with a reason", "action"),
    route(
        "GET",
        "/api/dlq/{ref}/preview",
        "the record patched by `?patch=JQ`: event, text, diff (JSON)",
    ),
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/dlq", list_page, name="console.dlq")
    app.router.add_get("/dlq/{ref}", record_page, name="console.dlq_record")
    app.router.add_post("/dlq/{ref}/replay", replay, name="console.dlq_replay")
    app.router.add_post("/dlq/{ref}/discard", discard, name="console.dlq_discard")
    app.router.add_get("/api/dlq/{ref}/preview", preview_api, name="console.dlq_preview")
