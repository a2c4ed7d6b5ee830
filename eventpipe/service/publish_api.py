"""``POST /v1/topics/{topic}/events``: CloudEvents over HTTP (binary, structured,
batch) onto a topic.  202 only after the broker acknowledged every event."""

from __future__ import annotations

from aiohttp import web

from eventpipe.context import Context
from eventpipe.envelope.http import from_http
from eventpipe.envelope.kafka import to_kafka
from eventpipe.errors import (
    BrokerUnavailableError,
    InvalidEventError,
    MalformedEventError,
    UnsupportedMediaTypeError,
)
from eventpipe.http_body import BodyError, decodes_content_encoding, read_body
from eventpipe.kafka.client import RecordTooLargeError
from eventpipe.problem import body_problem, problem
from eventpipe.publisher import PublishBatchError
from eventpipe.topics import RULE as TOPIC_RULE
from eventpipe.topics import is_topic_name

CTX = web.AppKey("ctx", Context)


@decodes_content_encoding
async def publish_events(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    svc = ctx.settings.service
    topic = request.match_info["topic"]
    if not is_topic_name(topic):
        return problem(
            400,
            "invalid-topic",
            f"{topic!r} is not a valid topic name",
            field="topic",
            reason=f"topic names are {TOPIC_RULE}",
        )
    try:
        body = await read_body(request, svc.max_body_bytes, "service.max_body_bytes")
    except BodyError as exc:
        return body_problem(exc)
    try:
        events = from_http(request.headers, body)
    except UnsupportedMediaTypeError as exc:
        return problem(
            415,
            "unsupported-media-type",
            str(exc),
            field="content-type",
            reason=str(exc),
            accepted=exc.accepted,
        )
    except MalformedEventError as exc:
        return problem(400, "malformed", str(exc), field=exc.field, reason=exc.reason)
    except InvalidEventError as exc:
        return problem(422, "invalid-event", str(exc), field=exc.field, reason=exc.reason)
    if len(events) > svc.max_batch_events:
        return problem(
            413,
            "batch-too-large",
            f"the batch holds {len(events)} events; at most {svc.max_batch_events} "
            "(service.max_batch_events)",
            field="body",
            reason="too many events",
        )
    retry_after = {"Retry-After": str(svc.retry_after_s)}
    try:
        if not ctx.settings.kafka.auto_create_topics and not await ctx.admin.exists(topic):
            return problem(
                404,
                "unknown-topic",
                f"topic {topic!r} does not exist; create it (list it under `topics:` in the "
                "config) or set kafka.auto_create_topics",
                field="topic",
                reason="unknown topic",
            )
        acks = await ctx.publisher.publish_messages(
            topic, [to_kafka(e) for e in events], [e.id for e in events]
        )
    except BrokerUnavailableError as exc:
        return problem(503, "broker-unavailable", str(exc), headers=retry_after)
    except PublishBatchError as exc:
        written = [events[i].id for i in sorted(exc.acked)]
        failed = [events[i].id for i in sorted(exc.failed)]
        if any(isinstance(e, RecordTooLargeError) for e in exc.failed.values()):
            return problem(
                413,
                "record-too-large",
                str(exc),
                field="data",
                reason="record too large for the broker",
                written=written,
                failed=failed,
            )
        return problem(
            503,
            "broker-unavailable",
            "the broker did not acknowledge every event; retry the request (ids are kept, "
            "so consumers deduplicate the ones already written)",
            headers=retry_after,
            written=written,
            failed=failed,
        )
    return web.json_response(
        {
            "topic": topic,
            "accepted": len(acks),
            "events": [{"id": a.id, "partition": a.partition, "offset": a.offset} for a in acks],
        },
        status=202,
    )


def install(app: web.Application) -> None:
    app.router.add_post("/v1/topics/{topic}/events", publish_events, name="publish")
