"""eventpipe.telemetry: W3C trace context on events, spans only when tracing is on,
the `telemetry:` and `logging:` settings, and JSON log lines."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from multidict import CIMultiDict
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eventpipe import telemetry
from eventpipe.envelope import CloudEvent
from eventpipe.errors import ConfigError
from eventpipe.json_log import JsonFormatter
from eventpipe.settings import load_settings
from eventpipe.telemetry import TraceContext

ROOT = Path(__file__).resolve().parents[2]
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TP2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


# ------------------------------------------------------------ propagation
@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (TP, (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)),
        (" " + TP + " ", (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)),
        # a later version may carry more fields; version 00 may not
        (
            "01-" + TP[3:] + "-what-comes-next",
            (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7, 1),
        ),
        (TP + "-extra", None),
        ("ff-" + TP[3:], None),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        (TP.upper(), None),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),
        ("", None),
        ("garbage", None),
    ],
)
def test_traceparent_is_checked_as_w3c_says(value: str, parsed: object) -> None:
    assert telemetry.parse_traceparent(value) == parsed


def test_incoming_headers_and_record_headers() -> None:
    headers = CIMultiDict({"TraceParent": TP, "TraceState": "a=1,b=2"})
    assert telemetry.incoming(headers) == TraceContext(TP, "a=1,b=2")
    assert telemetry.incoming(CIMultiDict({"traceparent": "nope", "tracestate": "a=1"})) is None
    assert telemetry.incoming({}) is None
    record = [("ce_id", b"x"), ("traceparent", TP.encode()), ("tracestate", b"k=v")]
    assert telemetry.from_record_headers(record) == TraceContext(TP, "k=v")
    assert telemetry.from_record_headers([("traceparent", b"\xff\xfe")]) is None
    assert telemetry.from_record_headers(None) is None


def test_stamp_never_replaces_the_events_own_context() -> None:
    own = CloudEvent.create("t", "/s", {}, traceparent=TP2)
    bare = CloudEvent.create("t", "/s", {})
    ctx = TraceContext(TP, "k=v")
    telemetry.stamp(own, ctx)
    telemetry.stamp(bare, ctx)
    telemetry.stamp(bare, None)
    assert own.extensions == {"traceparent": TP2}
    assert bare.extensions == {"traceparent": TP, "tracestate": "k=v"}
    headers = [("ce_id", b"1")]
    telemetry.stamp_headers(headers, ctx)
    assert headers[1:] == [("ce_traceparent", TP.encode()), ("ce_tracestate", b"k=v")]
    mapped = [("ce_traceparent", TP2.encode())]
    telemetry.stamp_headers(mapped, ctx)
    assert mapped == [("ce_traceparent", TP2.encode())]


def test_outputs_keep_the_inputs_context_unless_a_step_set_one() -> None:
    source = CloudEvent.create("t", "/s", {}, traceparent=TP, tracestate="k=v")
    rebuilt = CloudEvent.create("t2", "/s", {})
    chosen = CloudEvent.create("t3", "/s", {}, traceparent=TP2)
    untraced_in = CloudEvent.create("t", "/s", {})
    untraced_out = CloudEvent.create("t4", "/s", {})
    telemetry.keep_trace([(source, [source, rebuilt, chosen]), (untraced_in, [untraced_out])])
    assert rebuilt.extensions == {"traceparent": TP, "tracestate": "k=v"}
    assert chosen.extensions == {"traceparent": TP2}
    assert untraced_out.extensions == {}


# ------------------------------------------------------------------ spans
def test_off_by_default_every_span_helper_is_one_shared_no_op() -> None:
    assert not telemetry.enabled()
    first = telemetry.span("a")
    assert first is telemetry.span("b") is telemetry.server_span("/x", None, {})
    assert telemetry.consumer_span("c", iter(()), {}) is first
    with first as s:
        assert s is None
        assert telemetry.current() is None
    headers: dict[str, str] = {}
    telemetry.inject(headers)
    assert headers == {}
    assert telemetry.received(None) is None
    assert telemetry.received(TraceContext(TP)) == TraceContext(TP)
    assert telemetry.batch_span("orders", 0) is None


def test_a_server_span_continues_the_callers_trace(spans: InMemorySpanExporter) -> None:
    with telemetry.server_span("/webhooks/a", TraceContext(TP, "k=v"), {"x": 1}) as s:
        current = telemetry.current()
        headers: dict[str, str] = {}
        telemetry.inject(headers)
        telemetry.set_http_status(s, 503)
    [done] = spans.get_finished_spans()
    assert done.name == "POST /webhooks/a"
    assert done.context is not None and done.parent is not None
    assert done.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert done.parent.span_id == 0x00F067AA0BA902B7
    assert current == TraceContext(f"00-{TP[3:35]}-{done.context.span_id:016x}-01", "k=v")
    assert headers == {"traceparent": current.traceparent, "tracestate": "k=v"}
    assert done.attributes is not None and done.attributes["http.response.status_code"] == 503
    assert done.status.is_ok is False


def test_a_batch_span_links_each_context_once_capped(spans: InMemorySpanExporter) -> None:
    many = [TraceContext(f"00-{i + 1:032x}-{i + 1:016x}-01") for i in range(200)]
    with telemetry.consumer_span("process p", [*many, many[0], None], {"a": 1}):
        pass
    with telemetry.consumer_span("process one", [TraceContext(TP)] * 3, {}):
        pass
    with telemetry.consumer_span("process mixed", [TraceContext(TP), None], {}):
        pass
    big, one, mixed = spans.get_finished_spans()
    assert len(big.links) == telemetry.MAX_LINKS and big.parent is None
    assert big.attributes is not None and big.attributes["messaging.batch.message_count"] == 202
    # one shared context: the batch is its child (one trace), and links to it
    assert one.parent is not None and one.parent.span_id == 0x00F067AA0BA902B7
    assert len(one.links) == 1
    assert mixed.parent is None and len(mixed.links) == 1


async def test_produce_spans_wrap_the_call_and_record_its_failure(
    spans: InMemorySpanExporter,
) -> None:
    class Producer:
        @telemetry.produce_span
        async def send(self, topic: str, messages: list[bytes], *, fail: bool = False) -> int:
            if fail:
                raise RuntimeError("down")
            return len(messages)

    assert await Producer().send("orders", [b"a", b"b"]) == 2
    with pytest.raises(RuntimeError):
        await Producer().send("orders", [b"c"], fail=True)
    ok, failed = spans.get_finished_spans()
    assert ok.name == "send orders" and ok.attributes is not None
    assert ok.attributes["messaging.destination.name"] == "orders"
    assert ok.attributes["messaging.batch.message_count"] == 2
    assert failed.status.is_ok is False and failed.events[0].name == "exception"


def test_a_shared_batch_span_links_each_caller_once(spans: InMemorySpanExporter) -> None:
    with telemetry.span("opener") as opener:
        batch = telemetry.batch_span("orders", 2)
        assert batch is not None
        batch.add_caller()
    with telemetry.span("second"):
        batch.add_caller()
        batch.add_caller()  # a second record of the same request
    batch.add_caller()  # no current span: nothing to link
    batch.end(4)
    failed = telemetry.batch_span("orders", 0)
    assert failed is not None
    failed.end(1, RuntimeError("refused"))
    callers = {s.name: s.context.span_id for s in spans.get_finished_spans() if s.context}
    done, err = [s for s in spans.get_finished_spans() if s.name == "send orders"]
    assert opener is not None and done.parent is not None
    assert done.parent.span_id == opener.get_span_context().span_id
    linked = [link.context.span_id for link in done.links]
    assert linked == [callers["opener"], callers["second"]]
    assert done.attributes is not None
    assert done.attributes["messaging.batch.message_count"] == 4
    assert done.attributes["messaging.destination.partition.id"] == "2"
    assert done.status.is_ok and not err.status.is_ok


def test_batch_span_links_are_capped() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.install(provider)
    try:
        batch = telemetry.batch_span("t", 0)
        assert batch is not None
        for _ in range(telemetry.MAX_LINKS + 20):
            with telemetry.span("caller"):
                batch.add_caller()
        batch.end(telemetry.MAX_LINKS + 20)
    finally:
        telemetry.shutdown()
    [send] = [s for s in exporter.get_finished_spans() if s.name == "send t"]
    assert len(send.links) == telemetry.MAX_LINKS


# ------------------------------------------------------------------ setup
def test_setup_installs_nothing_without_an_endpoint() -> None:
    assert telemetry.setup(load_settings(environ={}), environ={}) is False
    assert telemetry.tracer is None and telemetry._provider is None
    s = load_settings(environ={"EVENTPIPE_TELEMETRY_OTLP_ENDPOINT": "http://127.0.0.1:1"})
    assert telemetry.setup(s, environ={"OTEL_SDK_DISABLED": "true"}) is False


@pytest.mark.parametrize(
    "environ",
    [
        {"EVENTPIPE_TELEMETRY_OTLP_ENDPOINT": "http://127.0.0.1:1"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"},
    ],
)
def test_an_endpoint_turns_tracing_on(environ: dict[str, str]) -> None:
    s = load_settings(environ=environ)
    try:
        assert telemetry.setup(s, environ=environ) is True
        assert telemetry.enabled()
    finally:
        telemetry.shutdown()  # nothing was recorded: nothing is sent
    assert not telemetry.enabled()


def test_the_endpoint_is_a_base_url_as_the_otel_variable() -> None:
    assert telemetry.traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert telemetry.traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert telemetry.traces_url("https://c/otlp/v1/traces") == "https://c/otlp/v1/traces"


def test_telemetry_and_logging_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "service: {log_level: WARNING}\n"
        "telemetry: {otlp_endpoint: 'http://otel:4318', sample_ratio: 0.25,"
        " headers: {x-api-key: secret}}\n"
        "logging: {format: json}\n"
    )
    s = load_settings(cfg, environ={"EVENTPIPE_TELEMETRY_SERVICE_NAME": "ingest-eu"})
    assert s.telemetry.otlp_endpoint == "http://otel:4318"
    assert s.telemetry.service_name == "ingest-eu" and s.telemetry.sample_ratio == 0.25
    assert s.telemetry.headers["x-api-key"].get_secret_value() == "secret"
    assert "secret" not in repr(s)
    assert s.logging.format == "json" and s.logging.level is None
    assert s.service.log_level == "WARNING"  # still where the level comes from by default
    env = {"EVENTPIPE_TELEMETRY_HEADERS": "a=1, b = two ", "EVENTPIPE_LOGGING_LEVEL": "DEBUG"}
    s = load_settings(environ=env)
    assert {k: v.get_secret_value() for k, v in s.telemetry.headers.items()} == {
        "a": "1",
        "b": "two",
    }
    assert s.logging.level == "DEBUG" and s.telemetry.otlp_endpoint is None


def test_bad_telemetry_and_logging_settings_name_the_key() -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(
            environ={
                "EVENTPIPE_TELEMETRY_OTLP_ENDPOINT": "otel:4318",
                "EVENTPIPE_TELEMETRY_HEADERS": "novalue",
                "EVENTPIPE_TELEMETRY_SAMPLE_RATIO": "2",
                "EVENTPIPE_LOGGING_FORMAT": "xml",
            }
        )
    problems = dict(ei.value.problems)
    assert set(problems) == {
        "telemetry.otlp_endpoint",
        "telemetry.headers",
        "telemetry.sample_ratio",
        "logging.format",
    }
    assert "key=value" in problems["telemetry.headers"]


# ------------------------------------------------------------------- logs
def _record(msg: str, **kw: object) -> logging.LogRecord:
    return logging.getLogger("eventpipe.test").makeRecord(
        "eventpipe.test", logging.WARNING, __file__, 1, msg, (), None, extra=kw or None
    )


def test_json_log_lines_carry_the_current_trace(spans: InMemorySpanExporter) -> None:
    fmt = JsonFormatter()
    outside = orjson.loads(fmt.format(_record("plain %s")))
    assert set(outside) == {"time", "level", "logger", "message"}
    assert outside["level"] == "WARNING" and outside["logger"] == "eventpipe.test"
    assert outside["time"].endswith("Z")
    with telemetry.span("work"):
        inside = orjson.loads(fmt.format(_record("in a span", pipeline="orders")))
    [done] = spans.get_finished_spans()
    assert done.context is not None
    assert inside["trace_id"] == f"{done.context.trace_id:032x}"
    assert inside["span_id"] == f"{done.context.span_id:016x}"
    assert inside["pipeline"] == "orders"
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        rec = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    line = fmt.format(rec)
    assert "\n" not in line
    assert "ValueError: boom" in orjson.loads(line)["exception"]


def test_logging_format_json_writes_one_object_per_line() -> None:
    code = (
        "import logging\n"
        "from eventpipe.logs import setup_logging\n"
        "setup_logging('INFO', 'json')\n"
        "logging.getLogger('eventpipe.x').info('hello %s', 'world')\n"
        "logging.getLogger('eventpipe.x').debug('not shown')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n"
        "    logging.getLogger('eventpipe.x').exception('failed')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=60, check=True
    )
    lines = [orjson.loads(line) for line in r.stderr.decode().splitlines()]
    assert [(d["level"], d["message"]) for d in lines] == [
        ("INFO", "hello world"),
        ("ERROR", "failed"),
    ]
    assert "ZeroDivisionError" in lines[1]["exception"]
