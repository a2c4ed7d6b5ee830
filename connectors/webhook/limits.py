"""Per-source limits: a token bucket (429), a concurrency cap (503) and a bounded
body read (413)."""

from __future__ import annotations

import math
import time

from aiohttp import web

READ_CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    pass


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


async def read_body(request: web.Request, limit: int) -> bytes:
    """At most ``limit`` bytes; refused early on Content-Length, else while reading."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise BodyTooLarge
        return await request.content.readexactly(length) if length else b""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
