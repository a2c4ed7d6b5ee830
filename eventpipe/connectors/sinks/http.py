"""The ``http`` sink: POST CloudEvents to a URL, per event or in batches.

An example is ``PLUGIN``'s ``example`` (shown in docs/reference.md#sink-http with
every key, and loaded by tests/unit/test_reference.py).

Which requests a write makes, their ``Idempotency-Key`` and the order they keep
are in :mod:`.http_requests`.

Answers are classified where they enter (ARCHITECTURE.md section 7), per
request, and a request's failure is its own records' only:

* 2xx: delivered.
* 429, 502, 503, 504, a timeout, a connection error, a 2xx whose body is cut
  short, an answer that is not HTTP: the endpoint is unavailable
  (:class:`HttpUnavailableError`).  The record is held and sent again with the
  same ``Idempotency-Key`` after a backoff (``Retry-After`` honoured up to
  ``retry.max``); it uses up no attempt.  The breaker counts a write in which
  unavailability dominated (see :mod:`eventpipe.pipelines.outcome`).
* other 5xx, 408, 425: retried for the record up to ``retry.max_attempts``.
* other 4xx, and an event that cannot be encoded: dead-lettered at once.  The
  dead letter carries the status and body in ``eventpipe.dlq.http.*``.

Any other exception is a bug: it is raised as it is and stops the pipeline.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import aiohttp
from pydantic import Field, SecretStr, field_validator

from eventpipe import telemetry
from eventpipe.breaker import CircuitBreaker
from eventpipe.durations import Duration
from eventpipe.errors import HTTP_BODY_LIMIT, EventpipeError, HttpStatusError
from eventpipe.loop import run_all
from eventpipe.plugin import PluginConfig
from eventpipe.sink import (
    BeforeCommit,
    DeliveryItem,
    PipelineSink,
    SinkPlugin,
    SinkUnavailableError,
)

from .http_requests import (
    Request,
    batch_requests,
    blocks_lane,
    event_requests,
    held_for_order,
    lanes,
    put_failure,
)

UNAVAILABLE_STATUSES = frozenset({429, 502, 503, 504})
# What an HTTP header cannot hold (RFC 9110 5.5: no CR, LF or NUL; we keep to visible
# ASCII, space and tab, so nothing is left to the client library's judgement).
_NOT_HEADER_TEXT = re.compile(r"[^\t\x20-\x7e]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class BreakerConfig(PluginConfig):
    failure_threshold: int = Field(
        5, ge=1, description="writes in a row the endpoint was unavailable for, to open it"
    )
    reset_timeout: Duration = Field(
        30.0, description="how long it stays open before one record is sent as a probe"
    )


class HttpSinkConfig(PluginConfig):
    url: str = Field(description="an http:// or https:// URL the events are POSTed to")
    batch: bool = Field(
        False,
        description="false: one POST per event; true: application/cloudevents-batch+json "
        "POSTs of batch_size records",
    )
    batch_size: int = Field(
        100, ge=1, le=10_000, description="batch: records per POST, aligned on source offsets"
    )
    mode: Literal["binary", "structured"] = Field(
        "binary", description="one POST per event: ce-* headers (binary) or one JSON body"
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="headers sent with every request (Authorization)"
    )
    timeout: Duration = Field(10.0, description="per request")
    concurrency: int = Field(16, ge=1, le=1024, description="requests in flight at once")
    ordering: Literal["key", "none"] = Field(
        "key", description="key: the events of a key are sent one after the other; none: no order"
    )
    circuit_breaker: BreakerConfig = Field(
        default_factory=BreakerConfig, description="pauses the pipeline while the endpoint is down"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in v.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if _NOT_HEADER_TEXT.search(value.get_secret_value()):
                raise ValueError(f"the value of {name!r} holds a control or non-ASCII character")
        return v


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def _error_body(resp: aiohttp.ClientResponse) -> str:
    """The first HTTP_BODY_LIMIT (+1, so a cut shows) bytes of an error answer's body."""
    buf = bytearray()
    try:
        while len(buf) <= HTTP_BODY_LIMIT:
            chunk = await resp.content.read(HTTP_BODY_LIMIT + 1 - len(buf))
            if not chunk:
                break
            buf += chunk
    except (aiohttp.ClientError, TimeoutError):
        pass  # the status decides; a body cut short is still worth keeping
    try:
        return buf.decode(resp.charset or "utf-8", "replace")
    except LookupError:  # a charset Python does not know
        return buf.decode("utf-8", "replace")


class HttpUnavailableError(SinkUnavailableError):
    """429 / 502 / 503 / 504, a timeout, a connection failure or an answer that is not
    HTTP: the endpoint, not the event, is at fault."""


class HttpSink(PipelineSink):
    type_name = "http"
    Config = HttpSinkConfig

    def __init__(self, config: HttpSinkConfig, *, name: str | None = None) -> None:
        super().__init__(config, name=name)
        self.cfg = config
        self.breaker = CircuitBreaker(
            config.circuit_breaker.failure_threshold, config.circuit_breaker.reset_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._headers = {k: v.get_secret_value() for k, v in config.headers.items()}

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
                connector=aiohttp.TCPConnector(limit=self.cfg.concurrency),
            )
        await super().start()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        await super().close()

    async def _post(self, headers: dict[str, str], body: bytes, key: str) -> None:
        """One POST; raises the classified error."""
        session = self._session
        if session is None:
            raise HttpUnavailableError(f"sink {self.label} is not started")
        h = {**self._headers, **headers, "Idempotency-Key": key}
        telemetry.inject(h)  # the delivering span's context, while tracing is on
        try:
            async with session.post(self.cfg.url, data=body, headers=h) as resp:
                status = resp.status
                if 200 <= status < 300:
                    await resp.read()
                    return
                text = await _error_body(resp)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise HttpUnavailableError(
                f"sink {self.label}: no answer from {self.cfg.url} within {self.cfg.timeout}s"
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            # A 2xx whose body was cut short: the receiver may or may not have taken the
            # event, so it is sent again (same Idempotency-Key), like a lost connection.
            raise HttpUnavailableError(
                f"sink {self.label}: the answer from {self.cfg.url} was cut short ({exc})"
            ) from exc
        except aiohttp.ClientResponseError as exc:
            # Raised before we get a response: a status line or headers that are not HTTP
            # (a broken proxy), too many redirects.  The endpoint, not the event, is at fault.
            raise HttpUnavailableError(
                f"sink {self.label}: no valid HTTP answer from {self.cfg.url}: "
                f"{type(exc).__name__}: {exc.message}"
            ) from exc
        except aiohttp.ClientError as exc:  # connection errors and the rest of aiohttp's
            raise HttpUnavailableError(f"sink {self.label}: {type(exc).__name__}: {exc}") from exc
        if status in UNAVAILABLE_STATUSES:
            cause = HttpStatusError(status, text[:200], retry_after, body=text)
            err = HttpUnavailableError(
                f"sink {self.label}: HTTP {status} from {self.cfg.url}", retry_after=retry_after
            )
            raise err from cause
        raise HttpStatusError(status, text[:200], retry_after, body=text)

    async def deliver(
        self, items: Sequence[DeliveryItem], *, before_commit: BeforeCommit | None = None
    ) -> dict[int, BaseException]:
        if self._session is None:
            raise HttpUnavailableError(f"sink {self.label} is not started")
        failed: dict[int, BaseException] = {}
        ordered = self.cfg.ordering == "key"
        if self.cfg.batch:
            size = self.cfg.batch_size
            requests = batch_requests(items, size=size, ordered=ordered, failed=failed)
        else:
            requests = event_requests(items, mode=self.cfg.mode, ordered=ordered, failed=failed)
        await self._send(requests, failed)
        return failed

    async def _send(self, requests: Sequence[Request], failed: dict[int, BaseException]) -> None:
        """Send ``requests``, each lane in order, up to ``concurrency`` at once; every
        request's classified failure goes to its records in ``failed``."""
        sem = asyncio.Semaphore(self.cfg.concurrency)

        async def run(lane: list[Request]) -> None:
            blocker: Request | None = None
            for r in lane:
                err: EventpipeError | None
                if blocker is not None:
                    err = held_for_order(self.label, blocker)
                else:
                    async with sem:
                        try:
                            await self._post(r.headers, r.body, r.key)
                            err = None
                        except EventpipeError as exc:  # classified by _post
                            err = exc
                    if blocks_lane(err):
                        blocker = r
                if err is not None:
                    for i in r.indexes:
                        put_failure(failed, i, err)

        await run_all(run(lane) for lane in lanes(requests))


PLUGIN = SinkPlugin.of(
    HttpSink,
    "POSTs CloudEvents to a URL, per event or in batches, with retries and a circuit breaker",
    example="""\
- http:
    url: https://hooks.example.com/orders
    headers: {Authorization: Bearer s3cr3t}
    timeout: 10s                      # per request
    concurrency: 16                   # requests in flight at once
    ordering: key                     # key (default) | none
    mode: binary                      # one POST per event: binary (ce-* headers) | structured
    batch: false                      # true: application/cloudevents-batch+json POSTs ...
    batch_size: 100                   # ... of this many records, aligned on source offsets
    circuit_breaker: {failure_threshold: 5, reset_timeout: 30s}
""",
)


__all__ = ["HttpSink", "HttpSinkConfig", "HttpUnavailableError", "parse_retry_after"]
