"""Per-source limits: a token bucket (429).  (The concurrency cap, 503, is a counter
in the source; the body limit, 413, is eventpipe.http_body.)"""

from __future__ import annotations

import math
import time


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int | None = None, *, now: float | None = None) -> None:
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, math.ceil(rate)))
        self._tokens = self.burst
        self._at = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> float:
        """0.0 when a token was taken, else the seconds until one is there."""
        now = time.monotonic() if now is None else now
        tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self.rate
