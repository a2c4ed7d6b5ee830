"""``logging.format: json``: one JSON object per line, for log shippers.

Each line holds ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger`` and
``message``; ``trace_id`` and ``span_id`` (lower-case hex, as OTLP and the W3C
``traceparent`` write them) while a span is current, so a log line finds its
trace; ``exception`` (the formatted traceback) when one is logged, and ``stack``
with ``stack_info``.  Fields passed with ``extra=`` that JSON can hold are kept.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

# Attributes every LogRecord has: what is left are the caller's ``extra`` fields.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = f"{ctx.trace_id:032x}"
            out["span_id"] = f"{ctx.span_id:016x}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        return orjson.dumps(out, default=str).decode()
