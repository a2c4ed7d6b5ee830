"""The one mapping from ingress errors to problem answers (eventpipe.http_ingress),
shared by the publish API and webhooks: status, type, field, reason, headers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web

from eventpipe.connectors.webhook.rejects import Reject
from eventpipe.errors import InvalidEventError, MalformedEventError, UnsupportedMediaTypeError
from eventpipe.http_body import BodyTooLarge, CorruptBody, UnsupportedEncoding
from eventpipe.http_ingress import broker_unavailable, check_batch, parse_events, record_too_large
from eventpipe.problem import PROBLEM_CT, Refusal

EVENT = {"specversion": "1.0", "id": "e-1", "source": "/t", "type": "t.happened"}
STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def answer(resp: web.Response) -> dict[str, Any]:
    assert resp.content_type == PROBLEM_CT
    assert isinstance(resp.body, bytes)
    body: dict[str, Any] = orjson.loads(resp.body)
    assert body["status"] == resp.status
    return body


def refusal_of(headers: dict[str, str], body: bytes) -> Refusal:
    with pytest.raises(Refusal) as exc:
        parse_events(headers, body)
    return exc.value


def test_a_valid_event_parses() -> None:
    [event] = parse_events(STRUCTURED, orjson.dumps(EVENT))
    assert event.id == "e-1" and event.type == "t.happened"


def test_an_unaccepted_media_type_is_415_naming_what_is_accepted() -> None:
    r = refusal_of({"Content-Type": "application/cloudevents+xml"}, b"<e/>")
    assert isinstance(r.__cause__, UnsupportedMediaTypeError)
    body = answer(r.response())
    assert (r.status, body["type"]) == (415, "urn:eventpipe:problem:unsupported-media-type")
    assert body["errors"][0]["field"] == "content-type"
    assert body["accepted"] == r.__cause__.accepted and body["accepted"]


def test_bytes_that_do_not_parse_are_400_naming_the_field() -> None:
    r = refusal_of(STRUCTURED, b"{not json")
    assert isinstance(r.__cause__, MalformedEventError)
    body = answer(r.response())
    assert (r.status, body["type"]) == (400, "urn:eventpipe:problem:malformed")
    assert body["errors"] == [{"field": r.__cause__.field, "reason": r.__cause__.reason}]


def test_an_event_against_the_spec_is_422_naming_the_attribute() -> None:
    r = refusal_of(STRUCTURED, orjson.dumps({**EVENT, "specversion": "0.3"}))
    assert isinstance(r.__cause__, InvalidEventError)
    body = answer(r.response())
    assert (r.status, body["type"]) == (422, "urn:eventpipe:problem:invalid-event")
    assert body["errors"][0]["field"] == "specversion"


def test_a_batch_over_its_limit_is_413_naming_the_setting() -> None:
    check_batch(3, 3, "service.max_batch_events")  # at the limit: fine
    with pytest.raises(Refusal) as exc:
        check_batch(4, 3, "service.max_batch_events")
    body = answer(exc.value.response())
    assert (exc.value.status, body["type"]) == (413, "urn:eventpipe:problem:batch-too-large")
    assert "at most 3 (service.max_batch_events)" in body["detail"]
    assert body["errors"] == [{"field": "body", "reason": "too many events"}]


def test_broker_unavailable_is_503_with_retry_after() -> None:
    r = broker_unavailable("no ack", 7, written=["a"], failed=["b"])
    resp = r.response()
    body = answer(resp)
    assert (resp.status, body["type"]) == (503, "urn:eventpipe:problem:broker-unavailable")
    assert resp.headers["Retry-After"] == "7"
    assert (body["written"], body["failed"]) == (["a"], ["b"])


def test_a_record_too_large_is_413_naming_the_field() -> None:
    body = answer(record_too_large("too big", field="data").response())
    assert body["status"] == 413 and body["type"] == "urn:eventpipe:problem:record-too-large"
    assert body["errors"] == [{"field": "data", "reason": "record too large for the broker"}]


@pytest.mark.parametrize(
    ("refusal", "status", "slug", "field"),
    [
        (BodyTooLarge(10, "max_body_bytes"), 413, "body-too-large", "body"),
        (UnsupportedEncoding("br is not decoded"), 415, "unsupported-content-encoding", None),
        (CorruptBody("truncated", "truncated gzip"), 400, "malformed", "body"),
    ],
)
def test_body_errors_answer_as_refusals(
    refusal: Refusal, status: int, slug: str, field: str | None
) -> None:
    resp = refusal.response()
    body = answer(resp)
    assert (resp.status, body["type"]) == (status, f"urn:eventpipe:problem:{slug}")
    if field is not None:
        assert body["errors"][0]["field"] == field
    else:
        assert resp.headers["Accept-Encoding"] == "gzip, deflate"


def test_a_webhook_reject_keeps_every_part_and_names_its_source() -> None:
    shared = broker_unavailable("no ack", 3, stored="unknown")
    reject = Reject.of(shared)
    assert (reject.status, reject.slug, reject.headers, reject.extra) == (
        503,
        "broker-unavailable",
        {"Retry-After": "3"},
        {"stored": "unknown"},
    )
    body = answer(reject.response("shop", dead_letter=None))
    assert body["instance"] == "/webhooks/shop" and body["source"] == "shop"
    assert body["stored"] == "unknown" and body["dead_letter"] is None


def test_several_errors_replace_the_field() -> None:
    r = Refusal(
        422,
        "schema-violation",
        "2 violations",
        field="body",
        errors=[{"field": "/a", "reason": "required"}, {"field": "/b", "reason": "type"}],
    )
    assert answer(r.response())["errors"] == [
        {"field": "/a", "reason": "required"},
        {"field": "/b", "reason": "type"},
    ]
