"""A scripted HTTP receiver for the http sink's failure modes (no tests here).

A raw asyncio server rather than aiohttp.web: it has to answer what a real
server never would (a garbage status line, a 2xx body cut short) and hang
without answering.  Each request is read whole (HTTP/1.1, Content-Length),
handed to the test's script, and answered with what the script returns; the
connection is closed after each answer.  Everything that arrived is recorded,
with the raw header lines, so a test can check that nothing was injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import format_datetime


@dataclass
class Request:
    n: int  # arrival number, from 1
    path: str
    header_lines: list[bytes]  # raw, as received
    headers: dict[str, str]  # lower-case names
    body: bytes
    arrived: float
    in_flight: int  # requests open at the receiver when this one arrived, itself included
    status: int | None = None  # what it was answered (None: no valid answer)

    @property
    def ce_id(self) -> str:
        return self.headers.get("ce-id", "")

    @property
    def key(self) -> str:
        return self.headers.get("idempotency-key", "")


HANG = b""  # the script's answer for "never answer" (until the client gives up)


def answer(status: int, body: bytes | str = b"", headers: dict[str, str] | None = None) -> bytes:
    raw = body.encode() if isinstance(body, str) else body
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(raw)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


def truncated_2xx() -> bytes:
    """A 200 that promises 100 bytes and sends 5 (aiohttp: ClientPayloadError)."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nshort"


def garbage() -> bytes:
    """Not an HTTP status line at all."""
    return b"GARBAGE\r\n\r\n"


def http_date(seconds_ahead: float) -> str:
    from datetime import UTC, datetime, timedelta

    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_ahead), usegmt=True)


Script = Callable[[Request], Awaitable[bytes]]


@dataclass
class Receiver:
    script: Script
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def accepted(self) -> list[Request]:
        """Requests answered 2xx, in the order they were answered."""
        return sorted(
            (r for r in self.requests if r.status is not None and 200 <= r.status < 300),
            key=lambda r: r.n,
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await self._answer(reader, writer)
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        first, *lines = head[:-4].split(b"\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.in_flight += 1
        req = Request(
            n=len(self.requests) + 1,
            path=first.split(b" ")[1].decode(),
            header_lines=lines,
            headers=headers,
            body=body,
            arrived=time.monotonic(),
            in_flight=self.in_flight,
        )
        self.requests.append(req)
        try:
            raw = await self.script(req)
            if raw == HANG:
                await reader.read()  # until the client closes the connection
                return
            if raw.startswith(b"HTTP/1.1 "):
                req.status = int(raw[9:12])
            writer.write(raw)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            self.in_flight -= 1


@contextlib.asynccontextmanager
async def receiving(script: Script) -> AsyncIterator[Receiver]:
    rec = Receiver(script)
    server = await asyncio.start_server(rec._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        server.close()
        for w in list(rec.writers):
            w.close()
        await server.wait_closed()
