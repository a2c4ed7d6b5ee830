"""Backoff delays of a pipeline's retry policy (``retry:`` in the spec)."""

from __future__ import annotations

import random

from .spec import RetrySpec


class RetryPolicy:
    """``delay(n)``: how long to wait before attempt ``n + 1`` (``n`` >= 1 failed so far).

    Exponential: ``initial * 2**(n-1)`` capped at ``max``; constant: ``initial``.
    With ``jitter`` the delay is drawn from ``[d/2, d]`` ("equal jitter"), so
    workers that failed together do not retry together.  A server's
    ``Retry-After`` raises the delay to what it asked for, up to ``max``: a far-off
    date (or a huge number of seconds) must not hold a partition for hours, so
    ``max`` is the longest wait between two tries, whatever the server says."""

    def __init__(self, spec: RetrySpec, *, rng: random.Random | None = None) -> None:
        self.spec = spec
        self.max_attempts = spec.max_attempts
        self._rng = rng or random.Random()

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        s = self.spec
        n = max(1, failures)
        d = s.initial if s.backoff == "constant" else s.initial * (2 ** min(n - 1, 30))
        d = min(d, s.max)
        if s.jitter and d > 0:
            d = self._rng.uniform(d / 2, d)
        if retry_after is not None:
            d = max(d, min(retry_after, s.max))
        return d
