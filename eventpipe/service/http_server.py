"""The service's HTTP/1.1 server: aiohttp's, with the limits a public endpoint needs.

* Bodies are not decompressed by aiohttp (``auto_decompress=False``): handlers
  decode them within their body limit (:mod:`eventpipe.http_body`).
* aiohttp bounds the time a connection waits for a request (``keepalive_timeout``,
  here ``service.idle_timeout_s``) but not the time a request head takes once it
  started: one header line every few seconds held a connection for minutes.  The
  head (request line and headers) must now be complete within
  ``service.header_timeout_s`` of its first byte, else the connection is closed
  (as Go's ``ReadHeaderTimeout`` and nginx's ``client_header_timeout``).
* A request aiohttp cannot parse gets a 400 problem, counted in
  ``eventpipe_http_malformed_requests_total{reason}`` and summarised in the log at
  most once a minute.  aiohttp itself logs each one as an ERROR with a traceback
  that echoes the request's bytes.

This module is the one place that subclasses aiohttp's ``RequestHandler``; it reads
one private attribute of it (``_messages``: the request heads parsed and not yet
handled), which the header-deadline test covers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from eventpipe import metrics
from eventpipe.problem import problem
from eventpipe.settings import ServiceSettings

log = logging.getLogger(__name__)
SUMMARY_INTERVAL_S = 60.0


def server_options(svc: ServiceSettings) -> dict[str, Any]:
    """aiohttp ``RequestHandler`` keyword arguments for the service's limits."""
    return {
        "auto_decompress": False,
        "keepalive_timeout": svc.idle_timeout_s,
        "max_line_size": svc.max_header_bytes,
        "max_field_size": svc.max_header_bytes,
        "max_headers": svc.max_headers,
        "access_log": None,
    }


class MalformedRequests:
    """Counts requests refused as not HTTP; logs how many, and why, at most once per
    ``interval_s`` (the first at once), never their bytes."""

    def __init__(self, interval_s: float = SUMMARY_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._pending: Counter[str] = Counter()
        self._logged_at = -interval_s
        self._flush: asyncio.TimerHandle | None = None
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._children: dict[str, Any] = {}

    def note(self, reason: str) -> None:
        child = self._children.get(reason)
        if child is None:
            child = self._children[reason] = metrics.HTTP_MALFORMED.labels(reason=reason)
        child.inc()
        self._pending[reason] += 1
        wait = self._logged_at + self.interval_s - time.monotonic()
        if wait <= 0:
            self.flush()
            return
        loop = asyncio.get_running_loop()
        if self._flush is None or self._flush_loop is not loop:  # (tests run many loops)
            self._flush = loop.call_later(wait, self.flush)
            self._flush_loop = loop

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._pending:
            return
        total = sum(self._pending.values())
        why = ", ".join(f"{reason}: {n}" for reason, n in self._pending.most_common())
        log.warning(
            "%d malformed HTTP request(s) refused with 400 (%s); request bytes are not "
            "logged; eventpipe_http_malformed_requests_total counts them",
            total,
            why,
        )
        self._pending.clear()
        self._logged_at = time.monotonic()


MALFORMED = MalformedRequests()


class _RequestHandler(RequestHandler):
    """aiohttp's connection handler with a deadline on request heads and quiet,
    counted, problem-JSON answers to unparseable requests."""

    def __init__(self, manager: web.Server, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_loop: asyncio.AbstractEventLoop = kwargs["loop"]
        self._header_timeout_s = header_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None
        self._last_body: Any = None  # the body stream of the last request head parsed

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        parsed = self._messages
        if parsed:  # a head is complete (or refused): no deadline until the next one
            self._last_body = parsed[-1][1]
            self._cancel_head_deadline()
        elif (
            data
            and self._head_deadline is None
            and self.transport is not None
            and (self._last_body is None or self._last_body.is_eof())
        ):  # the first bytes of a new head (not of a body still arriving)
            self._head_deadline = self._header_loop.call_later(
                self._header_timeout_s, self._head_timed_out
            )

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        metrics.HTTP_HEADER_TIMEOUTS.inc()
        log.debug("a request head did not arrive within %gs; closing", self._header_timeout_s)
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reason = type(exc).__name__
        MALFORMED.note(reason)
        resp = problem(
            400,
            "malformed-http",
            "the request is not valid HTTP/1.1 and was not read further",
            field="request",
            reason=reason,
        )
        resp.force_close()
        return resp


class _Server(web.Server):
    """aiohttp's per-listener connection factory, making :class:`_RequestHandler`."""

    def __init__(
        self, base: web.Server, *, header_timeout_s: float, handler_options: dict[str, Any]
    ) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
        )
        self._handler_loop = asyncio.get_running_loop()
        self._handler_options = dict(handler_options, header_timeout_s=header_timeout_s)

    def __call__(self) -> RequestHandler:
        return _RequestHandler(self, loop=self._handler_loop, **self._handler_options)


class ServiceRunner(web.AppRunner):
    """``web.AppRunner`` serving ``app`` with the limits of ``service`` settings."""

    def __init__(self, app: web.Application, svc: ServiceSettings) -> None:
        self._options = server_options(svc)
        self._header_timeout_s = svc.header_timeout_s
        super().__init__(
            app, handle_signals=False, shutdown_timeout=svc.shutdown_timeout_s, **self._options
        )

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # runs the app's startup, freezes it
        return _Server(base, header_timeout_s=self._header_timeout_s, handler_options=self._options)
