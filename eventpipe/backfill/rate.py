"""``--rate N/s``: a limiter shared by every worker of a job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    """At most ``rate`` events per second on average, over all callers.

    Each ``acquire(n)`` books the next ``n / rate`` seconds of a shared timeline and
    waits until its booking starts, so the first batch goes at once and later ones
    are spaced out; an idle spell does not build up a burst."""

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self._free_at = 0.0

    async def acquire(self, n: int) -> None:
        if self.rate is None or n <= 0:
            return
        now = self.clock()
        start = max(now, self._free_at)
        self._free_at = start + n / self.rate
        if start > now:
            await self.sleep(start - now)

    def batch_size(self, max_records: int) -> int:
        """About a second's worth of records per batch, so pacing stays smooth."""
        if self.rate is None:
            return max_records
        return max(1, min(max_records, int(self.rate)))
