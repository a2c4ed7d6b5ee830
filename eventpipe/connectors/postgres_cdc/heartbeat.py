"""Heartbeats and the stall alarm.

A heartbeat is a non-transactional logical message (``pg_logical_emit_message``)
written every ``heartbeat_interval_s``.  The reader sees it even when no captured
table changes (an idle database, or a busy one whose changes the publication
filters out), and moves the slot past it, so the slot's ``confirmed_flush_lsn``
advances and PostgreSQL can release WAL.  (The reader also advances to the WAL
flush position whenever a slot read comes back complete, so WAL written by other
databases is released between heartbeats too.)

The stall alarm: the slot lags (WAL exists it has not confirmed) and its confirmed
position has not moved for ``stall_timeout_s`` while the lag did not shrink.  It is
logged, exported as a metric, and makes ``/readyz`` answer 503.
"""

from __future__ import annotations

from dataclasses import dataclass

HEARTBEAT_PREFIX = "eventpipe.heartbeat"
WATERMARK_PREFIX = "eventpipe.snapshot.hw"


@dataclass(slots=True)
class StallDetector:
    timeout_s: float
    min_lag_bytes: int = 1
    _confirmed: int | None = None
    _since: float = 0.0
    _lag_at_progress: int = 0
    stalled: bool = False
    reason: str = ""

    def observe(self, now: float, confirmed: int | None, lag_bytes: int | None) -> bool:
        """Feed one observation of the slot; returns True while stalled."""
        lag = lag_bytes or 0
        if confirmed is None:
            self.stalled, self.reason = False, ""
            return False
        if self._confirmed is None or confirmed != self._confirmed:
            self._confirmed = confirmed
            self._since = now
            self._lag_at_progress = lag
            self.stalled, self.reason = False, ""
            return False
        idle_for = now - self._since
        if (
            lag >= self.min_lag_bytes
            and lag >= self._lag_at_progress
            and idle_for >= self.timeout_s
        ):
            self.stalled = True
            self.reason = (
                f"slot has not advanced for {idle_for:.0f}s while {lag} bytes of WAL wait "
                "(broker or database unreachable, or the reader is stuck)"
            )
        elif lag < self.min_lag_bytes:
            self.stalled, self.reason = False, ""
        return self.stalled
