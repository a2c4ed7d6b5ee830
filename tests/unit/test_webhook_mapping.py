"""From a verified request to its CloudEvent: ids, jq attributes, raw body kept."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import kafka as sdk_kafka

from eventpipe.connectors.webhook.config import WebhookConfig
from eventpipe.connectors.webhook.mapping import FieldProgram, MappingError, WebhookMapper
from eventpipe.connectors.webhook.verify import Verified
from eventpipe.envelope.kafka import from_kafka, to_kafka
from eventpipe.errors import ConfigError

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
STD = {"scheme": "standard-webhooks", "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}


EVENT_FIELDS = ("id", "id_fallback", "type", "subject", "partitionkey", "extensions", "source")


def mapper(name: str = "billing", **cfg: Any) -> WebhookMapper:
    base: dict[str, Any] = {"topic": "t", "verify": STD, "event": {}}
    for k, v in cfg.items():
        if k in EVENT_FIELDS:
            base["event"][k] = v
        else:
            base[k] = v
    return WebhookMapper(WebhookConfig.model_validate(base), name)


def event(
    m: WebhookMapper,
    raw: bytes,
    verified: Verified | None = None,
    headers: dict[str, str] | None = None,
):
    return m.event(
        raw=raw,
        body=orjson.loads(raw),
        headers=headers,
        verified=verified or Verified("msg_1", 1714564800, "v1,abc="),
        received=RECEIVED,
        body_digest="sha256:" + hashlib.sha256(raw).hexdigest(),
    )


RAW = b'{ "type": "invoice.paid",  "data": {"customer": "cus_9", "n": 3} }'


def test_standard_defaults_id_from_delivery_and_type_from_body():
    ev = event(mapper(), RAW)
    assert ev.id == "msg_1" and ev.type == "invoice.paid"
    assert ev.source == "/webhooks/billing" and ev.time == RECEIVED
    assert ev.extensions["whdigest"] == "sha256:" + hashlib.sha256(RAW).hexdigest()
    assert ev.extensions["whtimestamp"] == "1714564800"
    assert ev.extensions["whsignature"] == "v1,abc="


def test_raw_body_is_the_record_value_byte_for_byte_and_reads_back_as_json():
    ev = event(mapper(subject=".body.data.customer", partitionkey=".body.data.customer"), RAW)
    msg = to_kafka(ev)
    assert msg.value == RAW  # the signature can be checked again on these bytes
    assert msg.key == b"cus_9"
    back = from_kafka(msg.key, msg.value, msg.headers)
    assert back.data == {"type": "invoice.paid", "data": {"customer": "cus_9", "n": 3}}
    assert back.id == "msg_1" and back.subject == "cus_9"
    assert back.extensions["whsignature"] == "v1,abc="
    # the official SDK reads it too
    sdk_msg = sdk_kafka.KafkaMessage(headers=dict(msg.headers), key=msg.key, value=msg.value)
    sdk = sdk_kafka.from_kafka_event(sdk_msg)
    assert sdk.get_id() == "msg_1" and sdk.get_type() == "invoice.paid"
    assert sdk.get_data() == orjson.loads(RAW)


def test_parsed_body_re_encodes_and_keeps_the_digest():
    ev = event(mapper(body="parsed"), RAW)
    msg = to_kafka(ev)
    assert msg.value == orjson.dumps(orjson.loads(RAW))
    assert ev.extensions["whdigest"] == "sha256:" + hashlib.sha256(RAW).hexdigest()


def test_the_content_type_is_the_sources_json_not_the_senders():
    ev = event(mapper(), RAW)
    assert ev.datacontenttype == "application/json"
    assert dict(to_kafka(ev).headers)["content-type"] == b"application/json"


def test_stripe_id_from_body():
    m = mapper(verify={"scheme": "stripe", "secrets": ["whsec_x"]})
    raw = b'{"id": "evt_123", "type": "charge.succeeded"}'
    ev = event(m, raw, Verified(None, 1, "t=1,v1=x"))
    assert ev.id == "evt_123" and ev.type == "charge.succeeded"


def test_github_type_from_header():
    m = mapper(verify={"scheme": "github", "secrets": ["x"]})
    assert m.uses_headers
    ev = event(
        m,
        b'{"action": "opened"}',
        Verified("guid-1", None, "sha256=x"),
        headers={"x-github-event": "pull_request"},
    )
    assert ev.id == "guid-1" and ev.type == "github.pull_request"


def test_without_delivery_id_the_digest_is_the_id_and_stable():
    m = mapper(verify={"scheme": "none"})
    a = event(m, RAW, Verified(None, None, None))
    b = event(m, RAW, Verified(None, None, None))
    assert a.id == b.id == "sha256:" + hashlib.sha256(RAW).hexdigest()
    assert a.type == "webhook.billing"
    assert "whsignature" not in a.extensions and "whtimestamp" not in a.extensions


def test_id_fallback_reject():
    m = mapper(verify={"scheme": "none"}, id_fallback="reject")
    with pytest.raises(MappingError) as info:
        event(m, RAW, Verified(None, None, None))
    assert info.value.field == "id"


def test_id_expression_wins_over_the_delivery_id_and_numbers_become_text():
    ev = event(mapper(id=".body.data.n"), RAW)
    assert ev.id == "3"


def test_constants_and_extensions():
    m = mapper(
        type='"com.acme.billing"', extensions={"tenant": ".body.data.customer", "region": '"eu"'}
    )
    ev = event(m, RAW)
    assert ev.type == "com.acme.billing"
    assert ev.extensions["tenant"] == "cus_9" and ev.extensions["region"] == "eu"


def test_type_null_is_a_mapping_error_naming_the_field():
    with pytest.raises(MappingError) as info:
        event(mapper(type=".body.nope"), RAW)
    assert info.value.field == "type"


def test_runtime_jq_error_names_the_failing_field():
    m = mapper(subject=".body.data.customer", partitionkey=".body.data.n | ascii_downcase")
    with pytest.raises(MappingError) as info:
        event(m, RAW)
    assert info.value.field == "partitionkey"


def test_object_where_a_string_belongs():
    with pytest.raises(MappingError) as info:
        event(mapper(subject=".body.data"), RAW)
    assert info.value.field == "subject"


def test_compile_errors_name_each_field_at_load():
    with pytest.raises(ValueError) as info:
        mapper(type=".body.type |||", subject="[.")
    assert "type: not a valid jq" in str(info.value) and "subject: " in str(info.value)
    with pytest.raises(ConfigError) as info2:
        FieldProgram({"type": ".a |||", "ok": ".b"}, "jaq", where="event.")
    assert [p for p, _ in info2.value.problems] == ["event.type"]


def test_field_program_runs_once_and_defaults_missing_outputs_to_null():
    fp = FieldProgram({"a": ".x", "b": "empty", "c": '"k"', "d": ".y[]"}, "jaq")
    assert fp.run({"x": 1, "y": [7, 8]}) == {"a": 1, "b": None, "c": "k", "d": 7}
    assert not fp.uses_headers


@pytest.mark.parametrize("engine", ["jaq", "jq"])
def test_both_engines(engine: str):
    fp = FieldProgram({"t": '.body.type + ".v1"'}, engine)
    assert fp.run({"body": {"type": "a"}, "headers": {}}) == {"t": "a.v1"}


def test_cloudevents_input_refuses_mapping_expressions():
    with pytest.raises(ValueError, match="input: cloudevents"):
        WebhookConfig.model_validate(
            {"topic": "t", "verify": STD, "input": "cloudevents", "event": {"type": ".body.type"}}
        )


def test_reserved_extension_names_refused():
    for bad in ("whdigest", "Tenant", "a-b"):
        with pytest.raises(ValueError):
            WebhookConfig.model_validate(
                {"topic": "t", "verify": STD, "event": {"extensions": {bad: "1"}}}
            )


def test_validate_shorthand_is_a_subject():
    cfg = WebhookConfig.model_validate({"topic": "t", "verify": STD, "validate": "orders-value"})
    assert cfg.validate_ is not None and cfg.validate_.subject == "orders-value"


PATH_EXPRS = [
    ".body.type",
    ".body.data.customer",
    '.headers["x-github-event"]',
    '.headers."x-github-event"',
    '.["body"]["data"].n',
    ".body.missing.deeper",
    '.body.type // "fallback"',
    ".body.flag // 7",
    ".body.data.n.x",  # indexes a number: an error on every engine
    ".",
]
PATH_INPUTS = [
    {
        "body": {"type": "a", "data": {"customer": "c", "n": 3}, "flag": False},
        "headers": {"x-github-event": "push"},
    },
    {"body": None, "headers": {}},
    {"body": {"type": None, "data": None}},
    {"body": {"type": "t", "data": {"n": {"x": [1]}}, "flag": True}},
    {"body": [1, 2]},
]


@pytest.mark.parametrize("expr", PATH_EXPRS)
def test_plain_paths_are_evaluated_directly_with_jq_semantics(expr: str):
    from eventpipe.connectors.webhook.paths import parse_path
    from eventpipe.transforms.jq_engine import compile_program

    fast = parse_path(expr)
    assert fast is not None, expr
    for engine in ("jaq", "jq"):
        program = compile_program(f"[({expr})] | .[0]", engine)
        for value in PATH_INPUTS:
            try:
                expected: Any = ("value", program.first(value))
            except Exception:
                expected = ("error",)
            try:
                got: Any = ("value", fast.eval(value))
            except Exception:
                got = ("error",)
            assert got == expected, (expr, engine, value)


@pytest.mark.parametrize(
    "expr", [".a | ascii_downcase", ".a[0]", ".a // .b", ".a, .b", '."\\(.x)"', "..", ".a.b?"]
)
def test_everything_else_goes_to_the_jq_engine(expr: str):
    from eventpipe.connectors.webhook.paths import parse_path

    assert parse_path(expr) is None
    fp = FieldProgram({"f": expr}, "jaq")
    assert not fp.paths


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"subject": ".body.data.customer", "partitionkey": ".body.data.customer"},
        {"body": "parsed", "extensions": {"tenant": ".body.data.n", "region": '"eu"'}},
        {"verify": {"scheme": "none"}, "type": '"x.y"'},
    ],
)
def test_the_direct_record_equals_the_encoded_event(cfg: dict[str, Any]):
    m = mapper(**cfg)
    verified = Verified(None, None, None) if cfg.get("verify") else Verified("msg_1", 17, "v1,x")
    kw = dict(
        raw=RAW,
        body=orjson.loads(RAW),
        headers=None,
        verified=verified,
        received=RECEIVED,
        body_digest="sha256:" + hashlib.sha256(RAW).hexdigest(),
    )
    ev = m.event(**kw)
    event_id, msg = m.message(**kw)
    assert event_id == ev.id
    assert msg == to_kafka(ev)
