"""The dead-letter record (ARCHITECTURE.md section 6).

Same key, original value bytes, original headers, plus ``eventpipe.dlq.*``
headers mirroring Kafka Connect's ``__connect.errors.*``.  Sources that reject
input write the same record with ``stage=source``.  A value too large for the
broker is kept in Postgres instead (:mod:`eventpipe.dlq.payloads`): the record then
has no value and ``eventpipe.dlq.payload.ref`` / ``.size`` name it.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from eventpipe.envelope.event import format_time, parse_time
from eventpipe.errors import (
    HTTP_BODY_LIMIT,
    HttpStatusError,
    error_class_name,
    find_cause,
    is_retriable,
)

PREFIX = "eventpipe.dlq."
STACKTRACE_LIMIT = 8 * 1024
Stage = Literal["source", "decode", "validate", "transform", "sink"]
STAGES: tuple[str, ...] = ("source", "decode", "validate", "transform", "sink")

H_TOPIC = PREFIX + "topic"
H_PARTITION = PREFIX + "partition"
H_OFFSET = PREFIX + "offset"
H_TIMESTAMP = PREFIX + "timestamp"
H_PIPELINE = PREFIX + "pipeline"
H_STAGE = PREFIX + "stage"
H_STEP = PREFIX + "step"
H_EXC_CLASS = PREFIX + "exception.class"
H_EXC_MESSAGE = PREFIX + "exception.message"
H_EXC_STACKTRACE = PREFIX + "exception.stacktrace"
H_ATTEMPTS = PREFIX + "attempts"
H_FIRST_FAILED_AT = PREFIX + "first_failed_at"
H_FAILED_AT = PREFIX + "failed_at"
H_RETRIABLE = PREFIX + "retriable"
H_PAYLOAD_REF = PREFIX + "payload.ref"
H_PAYLOAD_SIZE = PREFIX + "payload.size"
# Fields cut because the dead letter was still too large without its value (a key or
# header alone over the limit): a JSON list of {"field", "size", "ref"}, each original
# kept in eventpipe.dlq_payloads under "ref" (:mod:`eventpipe.dlq.writer`).
H_CUT = PREFIX + "cut"
# An HTTP answer behind the failure (an http sink's 4xx/5xx): its status, and its body cut
# at HTTP_BODY_LIMIT bytes (4 KiB); absent for other failures.
H_HTTP_STATUS = PREFIX + "http.status"
H_HTTP_BODY = PREFIX + "http.body"


@dataclass(slots=True)
class Origin:
    """Where the failed record was read (absent for a rejected webhook request)."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = None


@dataclass(slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]  # the original headers, without eventpipe.dlq.*
    pipeline: str
    stage: str
    exception_class: str
    exception_message: str
    stacktrace: str = ""
    step: str | None = None
    origin: Origin = field(default_factory=Origin)
    attempts: int = 1
    first_failed_at: datetime | None = None
    failed_at: datetime | None = None
    retriable: bool = False
    payload_ref: str | None = None  # the value is kept in eventpipe.dlq_payloads
    payload_size: int | None = None
    cut: str | None = None  # H_CUT: the fields cut to fit the broker
    http_status: int | None = None
    http_body: str | None = None

    # ------------------------------------------------------------ building
    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]] | None,
        pipeline: str,
        stage: str,
        step: str | None = None,
        origin: Origin | None = None,
        attempts: int = 1,
        first_failed_at: datetime | None = None,
    ) -> DeadLetter:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        now = datetime.now(UTC)
        trace = "".join(traceback.format_exception(exc))
        http = find_cause(exc, HttpStatusError)
        return cls(
            key=key,
            value=value,
            headers=[(k, v) for k, v in (headers or ()) if not k.startswith(PREFIX)],
            pipeline=pipeline,
            stage=stage,
            step=step,
            exception_class=error_class_name(exc),
            exception_message=str(exc),
            stacktrace=cut_text(trace, STACKTRACE_LIMIT),
            origin=origin or Origin(),
            attempts=attempts,
            first_failed_at=first_failed_at or now,
            failed_at=now,
            retriable=is_retriable(exc),
            http_status=http.status if http is not None else None,
            http_body=cut_text(http.body, HTTP_BODY_LIMIT)
            if http is not None and http.body
            else None,
        )

    # ----------------------------------------------------------- encoding
    def kafka_headers(self) -> list[tuple[str, bytes]]:
        h = list(self.headers)
        o = self.origin

        def put(name: str, value: object) -> None:
            if value is not None:
                h.append((name, str(value).encode("utf-8")))

        put(H_TOPIC, o.topic)
        put(H_PARTITION, o.partition)
        put(H_OFFSET, o.offset)
        put(H_TIMESTAMP, o.timestamp_ms)
        put(H_PIPELINE, self.pipeline)
        put(H_STAGE, self.stage)
        put(H_STEP, self.step)
        put(H_EXC_CLASS, self.exception_class)
        put(H_EXC_MESSAGE, self.exception_message)
        put(H_EXC_STACKTRACE, self.stacktrace or None)
        put(H_ATTEMPTS, self.attempts)
        put(H_FIRST_FAILED_AT, format_time(self.first_failed_at) if self.first_failed_at else None)
        put(H_FAILED_AT, format_time(self.failed_at) if self.failed_at else None)
        put(H_RETRIABLE, "true" if self.retriable else "false")
        put(H_PAYLOAD_REF, self.payload_ref)
        put(H_PAYLOAD_SIZE, self.payload_size)
        put(H_CUT, self.cut)
        put(H_HTTP_STATUS, self.http_status)
        put(H_HTTP_BODY, self.http_body)
        return h

    @classmethod
    def from_kafka(
        cls, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> DeadLetter:
        """Decode a record read from a dead-letter topic."""
        meta = {k: v.decode("utf-8", "replace") for k, v in headers if k.startswith(PREFIX)}

        def num(name: str) -> int | None:
            v = meta.get(name)
            return int(v) if v not in (None, "") else None

        def ts(name: str) -> datetime | None:
            v = meta.get(name)
            return parse_time(v) if v else None

        return cls(
            key=key,
            value=value,
            headers=[(k, v) for k, v in headers if not k.startswith(PREFIX)],
            pipeline=meta.get(H_PIPELINE, ""),
            stage=meta.get(H_STAGE, ""),
            step=meta.get(H_STEP),
            exception_class=meta.get(H_EXC_CLASS, ""),
            exception_message=meta.get(H_EXC_MESSAGE, ""),
            stacktrace=meta.get(H_EXC_STACKTRACE, ""),
            origin=Origin(meta.get(H_TOPIC), num(H_PARTITION), num(H_OFFSET), num(H_TIMESTAMP)),
            attempts=num(H_ATTEMPTS) or 1,
            first_failed_at=ts(H_FIRST_FAILED_AT),
            failed_at=ts(H_FAILED_AT),
            retriable=meta.get(H_RETRIABLE) == "true",
            payload_ref=meta.get(H_PAYLOAD_REF) or None,
            payload_size=num(H_PAYLOAD_SIZE),
            cut=meta.get(H_CUT) or None,
            http_status=num(H_HTTP_STATUS),
            http_body=meta.get(H_HTTP_BODY),
        )


def cut_text(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    marker = "\n... (cut)"
    return raw[: limit - len(marker.encode())].decode("utf-8", "ignore") + marker
