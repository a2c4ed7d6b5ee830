"""The service's HTTP server pieces that need no socket: the malformed-request
summary is rate-limited and carries counts, not bytes."""

from __future__ import annotations

import logging

import pytest

from eventpipe.service.http_server import MalformedRequests


async def test_malformed_requests_are_summarised_not_logged_one_by_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    summary = MalformedRequests(interval_s=60)
    with caplog.at_level(logging.WARNING, logger="eventpipe.service.http_server"):
        for i in range(100):
            summary.note("LineTooLong" if i % 2 else "BadHttpMessage")
        assert len(caplog.records) == 1  # the first at once, the rest wait for the interval
        assert caplog.records[0].getMessage().startswith("1 malformed HTTP request(s)")
        summary.flush()  # (the timer, or the service stopping)
    assert len(caplog.records) == 2
    last = caplog.records[1].getMessage()
    assert last.startswith("99 malformed HTTP request(s)")
    assert "LineTooLong: 50" in last and "BadHttpMessage: 49" in last
    summary.flush()
    assert len(caplog.records) == 2  # nothing new, nothing logged
