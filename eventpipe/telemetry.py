"""Distributed tracing: W3C trace context on events, and OpenTelemetry spans.

Two things live here, and only the second costs anything:

* **Propagation**, always on.  A W3C ``traceparent`` (with its ``tracestate``) from
  outside -- an HTTP request header, a Kafka record header -- becomes the event's
  CloudEvents distributed-tracing extension when the event has none
  (:func:`incoming`, :func:`from_record_headers`, :func:`stamp`), and a pipeline's
  output events keep their input's (:func:`keep_trace`).  An invalid value is
  ignored, as the W3C spec says a receiver must.
* **Spans**, on only when :func:`setup` found an OTLP endpoint
  (``telemetry.otlp_endpoint`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``).  Until then
  :data:`tracer` is None and every span helper hands back one shared no-op context
  manager: no provider, no span objects, no context switches on the hot paths.
  With tracing on, an event that came with no trace context takes the context of
  the span that received it, so the pipeline and its sinks link back to it.

Spans follow the OpenTelemetry messaging conventions (``messaging.system``,
``messaging.destination.name``, ``messaging.batch.message_count``); a pipeline batch
links to the contexts of its events (at most :data:`MAX_LINKS`), and is their
child when they all share one.  The SDK is imported by :func:`setup` alone: spans
go through a batch processor (a background thread) to the OTLP/HTTP exporter.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Concatenate, NamedTuple, ParamSpec, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.trace.status import Status, StatusCode

from eventpipe import __version__
from eventpipe.envelope import CloudEvent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from eventpipe.settings import Settings

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_LINKS = 128  # links from one batch span to its events' contexts
SCOPE = "eventpipe"

tracer: trace.Tracer | None = None
"""The tracer while tracing is on; None (the default) means off."""
_provider: TracerProvider | None = None

# version-format "-" trace-id "-" parent-id "-" trace-flags, lower-case hex (W3C Trace
# Context, section 3.2); a later version may append fields after a dash.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_NOOP: AbstractContextManager[None] = contextlib.nullcontext()


class TraceContext(NamedTuple):
    """A valid ``traceparent`` and the ``tracestate`` that came with it."""

    traceparent: str
    tracestate: str | None = None


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a valid ``traceparent``, else None."""
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    tid, sid = int(trace_id, 16), int(span_id, 16)
    if not tid or not sid:
        return None
    return tid, sid, int(flags, 16)


def _context(traceparent: str | None, tracestate: str | None) -> TraceContext | None:
    if traceparent is None or parse_traceparent(traceparent) is None:
        return None
    return TraceContext(traceparent.strip(), tracestate.strip() if tracestate else None)


def incoming(headers: Mapping[str, str]) -> TraceContext | None:
    """The trace context of an HTTP request (``traceparent`` / ``tracestate`` headers;
    aiohttp's headers match names case-insensitively)."""
    return _context(headers.get(TRACEPARENT), headers.get(TRACESTATE))


def from_record_headers(headers: Iterable[tuple[str, bytes]] | None) -> TraceContext | None:
    """The trace context in a Kafka record's ``traceparent`` / ``tracestate`` headers
    (as OpenTelemetry's Kafka instrumentations write them)."""
    parent = state = None
    for name, value in headers or ():
        if name == TRACEPARENT:
            parent = value
        elif name == TRACESTATE:
            state = value
    if parent is None:
        return None
    try:
        return _context(parent.decode("ascii"), state.decode("ascii") if state else None)
    except UnicodeDecodeError:
        return None


def of_event(event: CloudEvent) -> TraceContext | None:
    ext = event.extensions
    tp = ext.get(TRACEPARENT)
    if not isinstance(tp, str):
        return None
    ts = ext.get(TRACESTATE)
    return _context(tp, ts if isinstance(ts, str) else None)


def stamp(event: CloudEvent, context: TraceContext | None) -> None:
    """Give ``event`` the distributed-tracing extension, unless it has its own."""
    if context is None or TRACEPARENT in event.extensions:
        return
    event.extensions[TRACEPARENT] = context.traceparent
    if context.tracestate:
        event.extensions[TRACESTATE] = context.tracestate


def stamp_headers(headers: list[tuple[str, bytes]], context: TraceContext | None) -> None:
    """:func:`stamp` for a record already in binary mode (``ce_*`` headers)."""
    if context is None or any(name == "ce_traceparent" for name, _ in headers):
        return
    headers.append(("ce_traceparent", context.traceparent.encode()))
    if context.tracestate:
        headers.append(("ce_tracestate", context.tracestate.encode()))


def keep_trace(pairs: Iterable[tuple[CloudEvent, list[CloudEvent]]]) -> None:
    """Each (input, outputs): outputs that a step left without a ``traceparent``
    take the input's, so the trace goes on through the pipeline."""
    for event, outputs in pairs:
        tp = event.extensions.get(TRACEPARENT)
        if tp is None:
            continue
        ts = event.extensions.get(TRACESTATE)
        for out in outputs:
            ext = out.extensions
            if TRACEPARENT not in ext:
                ext[TRACEPARENT] = tp
                if ts is not None:
                    ext[TRACESTATE] = ts


# ----------------------------------------------------------------- spans
def enabled() -> bool:
    return tracer is not None


def span_context(context: TraceContext) -> SpanContext:
    parsed = parse_traceparent(context.traceparent)
    assert parsed is not None  # a TraceContext holds a valid traceparent
    tid, sid, flags = parsed
    state = TraceState.from_header([context.tracestate]) if context.tracestate else None
    return SpanContext(tid, sid, is_remote=True, trace_flags=TraceFlags(flags), trace_state=state)


def current() -> TraceContext | None:
    """The current span's context as a traceparent (None with tracing off)."""
    if tracer is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    parent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
    state = ctx.trace_state.to_header() if ctx.trace_state else None
    return TraceContext(parent, state or None)


def received(context: TraceContext | None) -> TraceContext | None:
    """The context that events received now take when they have none: the current
    (receiving) span's while tracing is on, else ``context``, the sender's."""
    return current() or context


def inject(headers: MutableMapping[str, str]) -> None:
    """Transport headers for an outgoing request: the current span's context."""
    ctx = current()
    if ctx is not None:
        headers[TRACEPARENT] = ctx.traceparent
        if ctx.tracestate:
            headers[TRACESTATE] = ctx.tracestate


def span(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent: TraceContext | None = None,
    links: Sequence[Link] = (),
) -> AbstractContextManager[Span | None]:
    """A span made current for the ``with`` block (None there when tracing is off).
    ``parent``: a remote context to continue (else the current span's)."""
    t = tracer
    if t is None:
        return _NOOP
    ctx = trace.set_span_in_context(NonRecordingSpan(span_context(parent))) if parent else None
    return t.start_as_current_span(
        name, context=ctx, kind=kind, attributes=attributes, links=links or None
    )


def links(contexts: Iterable[TraceContext | None]) -> list[Link]:
    """One link per distinct context, at most :data:`MAX_LINKS`."""
    seen: set[str] = set()
    out = []
    for c in contexts:
        if c is None or c.traceparent in seen:
            continue
        seen.add(c.traceparent)
        out.append(Link(span_context(c)))
        if len(out) >= MAX_LINKS:
            break
    return out


def consumer_span(
    name: str, contexts: Iterable[TraceContext | None], attributes: Mapping[str, Any]
) -> AbstractContextManager[Span | None]:
    """A span processing a batch: linked to its messages' contexts (one each, None
    for a message without; not read while tracing is off), and their child when
    they all share one (a batch of one event reads as one trace)."""
    if tracer is None:
        return _NOOP
    found = list(contexts)
    distinct = set(found)
    parent = next(iter(distinct)) if len(distinct) == 1 else None  # None when none has one
    attrs = {**attributes, "messaging.batch.message_count": len(found)}
    return span(name, SpanKind.CONSUMER, attrs, parent=parent, links=links(found))


def server_span(
    route: str, context: TraceContext | None, attributes: Mapping[str, Any]
) -> AbstractContextManager[Span | None]:
    """An HTTP request received (``POST <route>``), continuing the caller's trace."""
    if tracer is None:
        return _NOOP
    attrs = {"http.request.method": "POST", "http.route": route, **attributes}
    return span(f"POST {route}", SpanKind.SERVER, attrs, parent=context)


def set_http_status(current_span: Span | None, status: int) -> None:
    if current_span is None:
        return
    current_span.set_attribute("http.response.status_code", status)
    if status >= 500:
        current_span.set_status(Status(StatusCode.ERROR))


_S = TypeVar("_S")
_M = TypeVar("_M")
_T = TypeVar("_T")
_P = ParamSpec("_P")


def produce_span(
    send: Callable[Concatenate[_S, str, _M, _P], Awaitable[_T]],
) -> Callable[Concatenate[_S, str, _M, _P], Awaitable[_T]]:
    """Decorates an async ``send(self, topic, message(s), ...)``: a PRODUCER span
    ``send <topic>`` around each call while tracing is on."""

    @functools.wraps(send)
    async def traced(self: _S, topic: str, messages: _M, *args: _P.args, **kw: _P.kwargs) -> _T:
        if tracer is None:
            return await send(self, topic, messages, *args, **kw)
        attrs: dict[str, Any] = {**_SEND, "messaging.destination.name": topic}
        if isinstance(messages, list):
            attrs["messaging.batch.message_count"] = len(messages)
        with span(f"send {topic}", SpanKind.PRODUCER, attrs):
            return await send(self, topic, messages, *args, **kw)

    return traced


class BatchSpan:
    """A PRODUCER span ``send <topic>`` for one record batch that many callers add
    records to (the webhook producer's): started by the caller that opens the batch
    (in its trace), linked to the context of every caller that adds a record (at
    most :data:`MAX_LINKS`), ended when the broker answered.  :func:`batch_span`
    gives None while tracing is off."""

    __slots__ = ("_linked", "_seen", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self._seen: set[int] = set()
        self._linked = 0

    def add_caller(self) -> None:
        """Link the current span (the caller adding a record), once per caller."""
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid or ctx.span_id in self._seen or self._linked >= MAX_LINKS:
            return
        self._seen.add(ctx.span_id)
        self._linked += 1
        self.span.add_link(ctx)

    def end(self, records: int, error: BaseException | None = None) -> None:
        self.span.set_attribute("messaging.batch.message_count", records)
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self.span.end()


def batch_span(topic: str, partition: int) -> BatchSpan | None:
    t = tracer
    if t is None:
        return None
    attrs = {**_SEND, "messaging.destination.name": topic}
    attrs["messaging.destination.partition.id"] = str(partition)
    return BatchSpan(t.start_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attrs))


_SEND = {
    "messaging.system": "kafka",
    "messaging.operation.name": "send",
    "messaging.operation.type": "send",
}


# ------------------------------------------------------------------ setup
def endpoint_configured(settings: Settings, environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        settings.telemetry.otlp_endpoint
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def traces_url(endpoint: str) -> str:
    """``telemetry.otlp_endpoint`` is a base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def setup(settings: Settings, environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on when an OTLP endpoint is configured; True when it is on."""
    environ = os.environ if environ is None else environ
    if tracer is not None or not endpoint_configured(settings, environ):
        return tracer is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    cfg = settings.telemetry
    name = cfg.service_name or environ.get("OTEL_SERVICE_NAME") or "eventpipe"
    exporter = OTLPSpanExporter(
        endpoint=traces_url(cfg.otlp_endpoint) if cfg.otlp_endpoint else None,
        headers={k: v.get_secret_value() for k, v in cfg.headers.items()} or None,
    )
    provider = TracerProvider(
        resource=Resource.create({"service.name": name, "service.version": __version__}),
        sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    log.info("tracing on: spans go to %s as %s", cfg.otlp_endpoint or "$OTEL_EXPORTER_*", name)
    return True


def install(provider: TracerProvider) -> None:
    """Trace with ``provider`` (tests give one with an in-memory exporter)."""
    global tracer, _provider
    _provider = provider
    tracer = provider.get_tracer(SCOPE, __version__)


def shutdown() -> None:
    """Export what is buffered and turn tracing off (blocks: call it off the loop)."""
    global tracer, _provider
    provider, _provider, tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()
