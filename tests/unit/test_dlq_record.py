from __future__ import annotations

import pytest

from eventpipe.dlq.record import (
    H_EXC_CLASS,
    H_HTTP_BODY,
    H_HTTP_STATUS,
    H_STAGE,
    HTTP_BODY_LIMIT,
    STACKTRACE_LIMIT,
    DeadLetter,
    Origin,
)
from eventpipe.errors import HttpStatusError, InvalidEventError


def _boom(depth: int) -> None:
    if depth:
        _boom(depth - 1)
    raise InvalidEventError("data.total", "must be a number" * 50)


def test_headers_round_trip_and_keep_original_headers() -> None:
    try:
        _boom(3)
    except InvalidEventError as exc:
        d = DeadLetter.from_exception(
            exc,
            key=b"k",
            value=b"\x00raw",
            headers=[("ce_id", b"1"), (H_STAGE, b"stale")],
            pipeline="orders",
            stage="validate",
            step="validate[0]",
            origin=Origin("orders", 2, 41, 1700000000000),
            attempts=3,
        )
    headers = d.kafka_headers()
    assert ("ce_id", b"1") in headers
    assert [v for k, v in headers if k == H_STAGE] == [b"validate"]  # stale one replaced
    assert dict(headers)[H_EXC_CLASS] == b"eventpipe.errors.InvalidEventError"
    back = DeadLetter.from_kafka(b"k", b"\x00raw", headers)
    assert back.pipeline == "orders" and back.stage == "validate" and back.step == "validate[0]"
    assert back.origin == Origin("orders", 2, 41, 1700000000000)
    assert back.attempts == 3 and back.retriable is False
    assert back.headers == [("ce_id", b"1")]
    assert back.value == b"\x00raw"
    assert "_boom" in back.stacktrace
    assert back.failed_at is not None and back.first_failed_at is not None


def test_stacktrace_is_cut_at_8_kib() -> None:
    try:
        raise InvalidEventError("data", "x" * 20_000)
    except InvalidEventError as exc:
        d = DeadLetter.from_exception(
            exc, key=None, value=None, headers=None, pipeline="p", stage="transform"
        )
    assert len(d.stacktrace.encode()) <= STACKTRACE_LIMIT
    assert d.stacktrace.endswith("(cut)")


def test_unknown_stage_rejected() -> None:
    with pytest.raises(ValueError, match="stage must be one of"):
        DeadLetter.from_exception(
            ValueError("x"), key=None, value=None, headers=None, pipeline="p", stage="nowhere"
        )


def test_http_status_and_body_have_their_own_headers() -> None:
    """An HTTP sink's failure (the status error anywhere in the cause chain) puts the
    status and the response body, cut at 4 KiB, in eventpipe.dlq.http.*."""
    cause = HttpStatusError(422, "\u00e9" * 3000)
    try:
        raise RuntimeError("wrapped") from cause
    except RuntimeError as exc:
        d = DeadLetter.from_exception(
            exc, key=None, value=b"v", headers=None, pipeline="p", stage="sink", step="http"
        )
    headers = dict(d.kafka_headers())
    assert headers[H_HTTP_STATUS] == b"422"
    body = headers[H_HTTP_BODY].decode()
    assert len(headers[H_HTTP_BODY]) <= HTTP_BODY_LIMIT and body.endswith("(cut)")
    assert body.startswith("\u00e9" * 100)
    back = DeadLetter.from_kafka(None, b"v", list(headers.items()))
    assert back.http_status == 422 and back.http_body == body
    plain = DeadLetter.from_exception(
        InvalidEventError("id", "bad"),
        key=None,
        value=None,
        headers=None,
        pipeline="p",
        stage="decode",
    )
    assert H_HTTP_STATUS not in dict(plain.kafka_headers())
