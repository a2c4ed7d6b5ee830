"""``POST /v1/topics/{topic}/events``: CloudEvents over HTTP (binary, structured,
batch) onto a topic.  202 only after the broker acknowledged every event."""

from __future__ import annotations

from aiohttp import web

from eventpipe import telemetry
from eventpipe.context import Context
from eventpipe.envelope.kafka import to_kafka
from eventpipe.errors import BrokerUnavailableError
from eventpipe.http_body import decodes_content_encoding, read_body
from eventpipe.http_ingress import broker_unavailable, check_batch, parse_events, record_too_large
from eventpipe.kafka.client import RecordTooLargeError
from eventpipe.problem import Refusal, problem
from eventpipe.publisher import PublishBatchError
from eventpipe.route_docs import RouteDoc
from eventpipe.topics import RULE as TOPIC_RULE
from eventpipe.topics import is_topic_name

CTX = web.AppKey("ctx", Context)
ROUTE = "/v1/topics/{topic}/events"


@decodes_content_encoding
async def publish_events(request: web.Request) -> web.Response:
    sender = telemetry.incoming(request.headers)
    attrs = {"messaging.destination.name": request.match_info["topic"]}
    with telemetry.server_span(ROUTE, sender, attrs) as span:
        try:
            resp = await _publish(request, sender)
        except Refusal as refused:
            resp = refused.response()
        telemetry.set_http_status(span, resp.status)
    return resp


async def _publish(request: web.Request, sender: telemetry.TraceContext | None) -> web.Response:
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
    body = await read_body(request, svc.max_body_bytes, "service.max_body_bytes")
    events = parse_events(request.headers, body)
    check_batch(len(events), svc.max_batch_events, "service.max_batch_events")
    trace = telemetry.received(sender)
    if trace is not None:
        for event in events:
            telemetry.stamp(event, trace)
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
            topic, [to_kafka(e) for e in events], [e.id for e in events], via="publish-api"
        )
    except BrokerUnavailableError as exc:
        raise broker_unavailable(str(exc), svc.retry_after_s) from exc
    except PublishBatchError as exc:
        written = [events[i].id for i in sorted(exc.acked)]
        failed = [events[i].id for i in sorted(exc.failed)]
        if any(isinstance(e, RecordTooLargeError) for e in exc.failed.values()):
            raise record_too_large(str(exc), field="data", written=written, failed=failed) from exc
        raise broker_unavailable(
            "the broker did not acknowledge every event; retry the request (ids are kept, "
            "so consumers deduplicate the ones already written)",
            svc.retry_after_s,
            written=written,
            failed=failed,
        ) from exc
    return web.json_response(
        {
            "topic": topic,
            "accepted": len(acks),
            "events": [{"id": a.id, "partition": a.partition, "offset": a.offset} for a in acks],
        },
        status=202,
    )


ROUTES = (
    RouteDoc(
        "POST",
        "/v1/topics/{topic}/events",
        "publish CloudEvents (binary, structured or a batch) to a topic; 202 after the broker "
        "acknowledged",
    ),
)


def install(app: web.Application) -> None:
    app.router.add_post(ROUTE, publish_events, name="publish")
