"""OpenTelemetry spans end to end, against the real broker and PostgreSQL: a webhook
request with a ``traceparent`` header goes through a pipeline (an event-mode jq
step that rebuilds the event, a Postgres sink, an HTTP sink) and into the
dead-letter topic, and every span on the way is in the caller's trace or linked to
it.  Spans are read from the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from eventpipe import telemetry
from eventpipe.service.config import parse_sources
from eventpipe.service.publish_api import ROUTE
from eventpipe.service.runner import Service
from eventpipe.settings import Settings
from tests.helpers import read_events, read_records, receiving_posts
from tests.integration.test_pipeline_http import wait_until
from tests.integration.test_pipeline_support import ident, sql, wait_rows, with_pipelines
from tests.integration.test_service_run import _start as start_service
from tests.integration.test_service_run import _wait_ready
from tests.integration.test_trace_propagation import through_kafka_source

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"


def traceparent(trace_id: str, span_id: str = CALLER_SPAN) -> str:
    return f"00-{trace_id}-{span_id}-01"


class Endpoint:
    """The HTTP sink's destination: the headers of every request, by ce-id."""

    def __init__(self) -> None:
        self.headers: dict[str, dict[str, str]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.headers[request.headers["ce-id"]] = {k.lower(): v for k, v in request.headers.items()}
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def endpoint() -> AsyncIterator[tuple[Endpoint, str]]:
    ep = Endpoint()
    async with receiving_posts(ep.handle) as url:
        yield ep, url


async def until(pred: Any) -> None:
    assert await wait_until(pred), "timed out"


@contextlib.asynccontextmanager
async def service(settings: Settings, url: str) -> AsyncIterator[tuple[Service, str, str]]:
    """A webhook source into a topic, and a pipeline from it: an event-mode jq step
    that rebuilds the event (its output has no traceparent of its own), a Postgres
    sink that refuses a negative total (a dead letter), and an HTTP sink."""
    name = ident("tr")
    db = settings.database.url.get_secret_value()
    await sql(db, f"create table {name} (id text primary key, total numeric check (total > 0))")
    hook = {
        "type": "webhook",
        "name": name,
        "topic": name,
        "verify": {"scheme": "none"},
        "event": {"id": ".body.id", "type": '"order.placed"'},
    }
    assert parse_sources([hook])[1] == []
    pipeline = {
        "name": name,
        "source": {"topics": [name], "partitions": 1},
        "batch": {"within": "10ms"},
        "steps": [
            {
                "jq": {
                    "program": '{specversion, id, source, type: "order.seen", data}',
                    "apply_to": "event",
                }
            }
        ],
        "sinks": [
            {
                "postgres": {
                    "name": "rows",
                    "table": name,
                    "columns": {"id": ".id", "total": ".data.total"},
                }
            },
            {"http": {"name": "hook", "url": url}},
        ],
    }
    s = with_pipelines(settings, pipeline).model_copy(
        update={
            "sources": [hook],
            "kafka": settings.kafka.model_copy(update={"auto_create_topics": True}),
        }
    )
    svc = Service(s, "all")
    await svc.start()
    try:
        yield svc, name, db
    finally:
        await svc.stop()


async def post(svc: Service, name: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{svc.url}/webhooks/{name}", data=orjson.dumps(body), headers=headers) as r,
    ):
        return r.status


def one(spans: list[ReadableSpan], name: str, trace_id: int | None = None) -> ReadableSpan:
    found = [
        s
        for s in spans
        if s.name == name and (trace_id is None or (s.context and s.context.trace_id == trace_id))
    ]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


async def test_a_traced_webhook_request_is_followed_to_the_sinks_and_the_dead_letter(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    json = {"content-type": "application/json"}
    async with endpoint() as (ep, url), service(settings, url) as (svc, name, db):
        status = await post(
            svc, name, {"id": "o-1", "total": 5}, {**json, "traceparent": traceparent(CALLER_TRACE)}
        )
        assert status == 200
        assert await wait_rows(db, f"select count(*) from {name}", 1) == 1
        await until(lambda: "o-1" in ep.headers)
        # one event a batch: the second request goes after the first was delivered
        status = await post(
            svc, name, {"id": "o-2", "total": -1}, {**json, "traceparent": traceparent(OTHER_TRACE)}
        )
        assert status == 200
        [letter] = await read_records(settings.kafka.bootstrap, f"{name}.dlq", 1)
        events = {e.id: e for e in await read_events(settings.kafka.bootstrap, name, 2)}
        finished = list(spans.get_finished_spans())

    caller = int(CALLER_TRACE, 16)
    # the receive span continues the caller's trace, and the event takes its context
    receive = one(finished, f"POST /webhooks/{name}", caller)
    assert receive.kind == SpanKind.SERVER
    assert receive.parent is not None and receive.parent.span_id == int(CALLER_SPAN, 16)
    assert receive.attributes is not None
    assert receive.attributes["http.response.status_code"] == 200
    receive_id = ids(receive)[1]
    assert events["o-1"].extensions["traceparent"] == f"00-{CALLER_TRACE}-{receive_id:016x}-01"
    produce = one(finished, f"send {name}", caller)
    assert produce.kind == SpanKind.PRODUCER
    assert produce.parent is not None and produce.parent.span_id == receive_id
    assert [link.context.span_id for link in produce.links] == [receive_id]
    assert produce.attributes is not None
    assert produce.attributes["messaging.batch.message_count"] == 1

    # the pipeline batch links to the event's context and, being its only one, is its child
    batch = one(finished, f"process {name}", caller)
    assert batch.kind == SpanKind.CONSUMER
    assert [(link.context.trace_id, link.context.span_id) for link in batch.links] == [
        (caller, receive_id)
    ]
    assert batch.parent is not None and batch.parent.span_id == receive_id
    batch_id = ids(batch)[1]
    step = next(s for s in finished if s.name.startswith("step ") and ids(s)[0] == caller)
    assert step.parent is not None and step.parent.span_id == batch_id
    for sink in ("rows", "hook"):
        deliver = one(finished, f"deliver {sink}", caller)
        assert deliver.parent is not None and deliver.parent.span_id == batch_id

    # the HTTP sink: the event's trace context (kept through the jq step that rebuilt
    # the event) as ce-traceparent, the delivering span's as the request's traceparent
    sent = ep.headers["o-1"]
    assert sent["ce-traceparent"] == events["o-1"].extensions["traceparent"]
    hook_span = ids(one(finished, "deliver hook", caller))[1]
    assert sent["traceparent"] == f"00-{CALLER_TRACE}-{hook_span:016x}-01"

    # the refused row's dead letter keeps the original headers, its trace context too
    other = int(OTHER_TRACE, 16)
    headers = dict(letter.headers)
    assert headers["eventpipe.dlq.stage"] == b"sink"
    assert headers["ce_traceparent"].decode() == events["o-2"].extensions["traceparent"]
    assert str(events["o-2"].extensions["traceparent"]).startswith(f"00-{OTHER_TRACE}-")
    dead = one(finished, f"send {name}.dlq", other)
    assert dead.parent is not None
    rows_span = one(finished, "deliver rows", other)
    assert dead.parent.span_id == ids(rows_span)[1]


async def test_tracing_off_makes_no_spans_and_keeps_a_callers_context(settings: Settings) -> None:
    assert not telemetry.enabled()
    json = {"content-type": "application/json"}
    async with endpoint() as (ep, url), service(settings, url) as (svc, name, db):
        assert await post(svc, name, {"id": "plain", "total": 1}, json) == 200
        assert await wait_rows(db, f"select count(*) from {name}", 1) == 1
        await until(lambda: "plain" in ep.headers)
        traced = traceparent(CALLER_TRACE)
        assert (
            await post(svc, name, {"id": "t", "total": 2}, {**json, "traceparent": traced}) == 200
        )
        await until(lambda: "t" in ep.headers)
        events = {e.id: e for e in await read_events(settings.kafka.bootstrap, name, 2)}
    assert "traceparent" not in events["plain"].extensions
    assert "traceparent" not in ep.headers["plain"] and "ce-traceparent" not in ep.headers["plain"]
    # the caller's context is the event's as it came, through the pipeline's step
    assert events["t"].extensions["traceparent"] == traced
    assert ep.headers["t"]["ce-traceparent"] == traced
    assert "traceparent" not in ep.headers["t"]  # no span of ours to send


@contextlib.contextmanager
def ended(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """``proc``, killed if the block leaves it running."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


async def test_eventpipe_run_exports_spans_over_otlp_and_logs_json_lines(
    settings: Settings, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real process: `telemetry.otlp_endpoint` (here from its EVENTPIPE_ variable)
    sends the spans to an OTLP/HTTP collector (the SDK's exporter, protobuf), flushed
    at shutdown; `logging.format: json` makes every stderr line a JSON object."""
    bodies: list[bytes] = []

    async def collect(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=200, content_type="application/x-protobuf")

    async with receiving_posts(collect, "/v1/traces") as traces:
        for name, value in {
            "EVENTPIPE_TELEMETRY_OTLP_ENDPOINT": traces.removesuffix("/v1/traces"),
            "EVENTPIPE_TELEMETRY_SERVICE_NAME": "svc-a",
            "EVENTPIPE_LOGGING_FORMAT": "json",
            "EVENTPIPE_SERVICE_LOG_LEVEL": "INFO",
        }.items():
            monkeypatch.setenv(name, value)
        started, url = start_service(settings, tmp_path, topic)
        with ended(started) as proc:
            await asyncio.to_thread(_wait_ready, url, proc)
            body = orjson.dumps({"specversion": "1.0", "id": "e-1", "source": "/t", "type": "t"})
            headers = {
                "content-type": "application/cloudevents+json",
                "traceparent": traceparent(CALLER_TRACE),
            }
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{url}/v1/topics/{topic}/events", data=body, headers=headers) as r,
            ):
                assert r.status == 202
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0
            assert proc.stderr is not None
            stderr = proc.stderr.read().decode()

    lines = [orjson.loads(line) for line in stderr.splitlines()]  # each one JSON
    assert any(line["message"].startswith("eventpipe serving on") for line in lines)
    exported = []
    for raw in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(raw)
        for rs in request.resource_spans:
            resource = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                exported += [(resource["service.name"], s) for s in ss.spans]
    caller = bytes.fromhex(CALLER_TRACE)
    names = {s.name: (svc, s) for svc, s in exported if s.trace_id == caller}
    assert set(names) == {f"POST {ROUTE}", f"send {topic}"}, names
    service_name, receive = names[f"POST {ROUTE}"]
    assert service_name == "svc-a"
    assert receive.parent_span_id == bytes.fromhex(CALLER_SPAN)
    assert names[f"send {topic}"][1].parent_span_id == receive.span_id
    [event] = await read_events(settings.kafka.bootstrap, topic, 1)
    assert event.extensions["traceparent"] == f"00-{CALLER_TRACE}-{receive.span_id.hex()}-01"


async def test_the_kafka_source_links_its_batch_to_the_records_contexts(
    settings: Settings, topic: str, spans: InMemorySpanExporter
) -> None:
    caller = traceparent(CALLER_TRACE)
    name, events = await through_kafka_source(
        settings, topic, [(b"k1", b'{"n": 1}', [("traceparent", caller.encode())]), (b"k2", b"{}")]
    )
    finished = list(spans.get_finished_spans())
    batch = one(finished, f"process {name}")
    assert batch.kind == SpanKind.CONSUMER
    # one record had a context: linked, but not the parent of a batch it shares
    assert [(link.context.trace_id, link.context.span_id) for link in batch.links] == [
        (int(CALLER_TRACE, 16), int(CALLER_SPAN, 16))
    ]
    assert batch.parent is None and batch.attributes is not None
    assert batch.attributes["messaging.batch.message_count"] == 2
    trace_id, batch_id = ids(batch)
    by_key = {e.partitionkey: e for e in events}
    assert by_key["k1"].extensions["traceparent"] == caller  # the record's own
    # the other takes the batch span's context, so what processes it links back here
    assert batch.context is not None
    flags = int(batch.context.trace_flags)  # sampled, and (W3C level 2) random
    assert by_key["k2"].extensions["traceparent"] == (
        f"00-{trace_id:032x}-{batch_id:016x}-{flags:02x}"
    )
    send = one(finished, f"send {topic}.out")
    assert send.parent is not None and send.parent.span_id == batch_id
