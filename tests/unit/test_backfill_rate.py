"""The backfill rate limiter, on a fake clock."""

from __future__ import annotations

from eventpipe.backfill.rate import RateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


async def test_books_a_shared_timeline() -> None:
    t = FakeTime()
    lim = RateLimiter(100.0, clock=t.clock, sleep=t.sleep)
    await lim.acquire(50)  # first batch at once
    assert t.slept == []
    await lim.acquire(50)  # waits for the first one's half second
    await lim.acquire(100)
    assert t.slept == [0.5, 0.5]
    # 200 events by t=1.0 (the last booking runs to 2.0): 100/s on average
    assert t.now == 1.0
    t.now = 10.0  # idle a while: no burst builds up
    await lim.acquire(100)
    await lim.acquire(100)
    assert t.slept[-1] == 1.0


async def test_unlimited_and_batch_sizes() -> None:
    t = FakeTime()
    lim = RateLimiter(None, clock=t.clock, sleep=t.sleep)
    await lim.acquire(10**6)
    assert t.slept == [] and lim.batch_size(1000) == 1000
    assert RateLimiter(250.0).batch_size(1000) == 250
    assert RateLimiter(0.5).batch_size(1000) == 1
