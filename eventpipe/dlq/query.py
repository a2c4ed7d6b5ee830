"""Which dead letters a command works on: filters shared by list, stats, replay,
discard and the admin API, and parsing of their arguments (errors name the flag)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eventpipe.dlq.reader import Entry
from eventpipe.dlq.record import STAGES
from eventpipe.envelope.event import parse_time
from eventpipe.errors import InvalidEventError, PermanentError

_RELATIVE = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class FilterError(PermanentError):
    def __init__(self, flag: str, reason: str) -> None:
        self.flag = flag
        super().__init__(f"{flag}: {reason}")


def parse_when(value: str, flag: str, *, now: datetime | None = None) -> datetime:
    """RFC 3339 (``2026-11-22T10:00:00Z``), a date (``2026-11-22``, midnight UTC), or
    an age (``30m``, ``2h``, ``7d``: that long ago)."""
    v = value.strip()
    if m := _RELATIVE.match(v):
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    if _DATE.match(v):
        try:
            return datetime.fromisoformat(v).replace(tzinfo=UTC)
        except ValueError as exc:
            raise FilterError(flag, f"{value!r} is not a valid date") from exc
    try:
        return parse_time(v)
    except InvalidEventError:
        raise FilterError(
            flag,
            f"{value!r} is not a time; use RFC 3339 (2026-11-22T10:00:00Z), a date "
            "(2026-11-22) or an age (30m, 2h, 7d)",
        ) from None


@dataclass
class Filters:
    pipeline: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    exception: str | None = None
    stage: str | None = None
    where: str | None = None
    limit: int | None = None
    include_discarded: bool = False
    _program: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.stage is not None and self.stage not in STAGES:
            raise FilterError("--stage", f"{self.stage!r} is not one of {', '.join(STAGES)}")
        if self.since and self.until and self.until < self.since:
            raise FilterError("--until", "is before --since")
        if self.limit is not None and self.limit < 1:
            raise FilterError("--limit", "must be at least 1")
        if self.where:
            from eventpipe.transforms.jq_engine import JqCompileError, compile_program

            try:
                self._program = compile_program(self.where, "jaq")
            except JqCompileError as exc:
                raise FilterError("--where", f"does not compile: {exc}") from exc

    def matches(self, e: Entry, discarded: set[tuple[str, int, int]] | None = None) -> bool:
        d = e.letter
        if self.pipeline is not None and d.pipeline != self.pipeline:
            return False
        if self.stage is not None and d.stage != self.stage:
            return False
        if self.exception is not None:
            cls = d.exception_class
            if cls != self.exception and not cls.endswith("." + self.exception):
                return False
        if self.since is not None and e.failed_at < self.since:
            return False
        if self.until is not None and e.failed_at > self.until:
            return False
        if (
            not self.include_discarded
            and discarded is not None
            and (e.topic, e.partition, e.offset) in discarded
        ):
            return False
        if self._program is not None:  # compiled by the jq engine, imported with --where
            from eventpipe.transforms.jq_engine import NO_OUTPUT

            try:
                out = self._program.first(e.to_doc())
            except Exception:
                return False
            if out is NO_OUTPUT or out is None or out is False:
                return False
        return True


def parse_ref(ref: str) -> tuple[str, int, int] | None:
    """``topic:partition:offset`` -> tuple; anything else is an event id (None)."""
    parts = ref.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return None
