from __future__ import annotations

import pytest
from eventpipe.dlq.record import (
    H_EXC_CLASS,
    H_STAGE,
    STACKTRACE_LIMIT,
    DeadLetter,
    Origin,
)

from eventpipe.errors import InvalidEventError


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
