"""Reading a request body within a byte limit, and its ``Content-Encoding``.

The service turns aiohttp's own decompression off (``auto_decompress=False``,
:mod:`eventpipe.service.http_server`): aiohttp inflates a body whole, also while it
drains a body nobody read after the answer was sent, so a 1 MiB gzip body that
expands to 1 GiB cost seconds of CPU on any route, unauthenticated.  Here the
limit applies to the *decoded* bytes and inflating stops one byte past it.

``gzip`` (also ``x-gzip``) and ``deflate`` are decoded; ``identity`` is the same
as no header; any other coding, or a stack of codings, is refused (415, naming
the ones accepted).  A corrupt or truncated compressed body is a 400.  Only
handlers marked :func:`decodes_content_encoding` read compressed bodies; the
service answers a compressed body on any other route with 415 (service.app).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from eventpipe.problem import Refusal

READ_CHUNK = 64 * 1024
ACCEPT_ENCODING = "gzip, deflate"  # the Accept-Encoding header of a 415 (RFC 9110 12.5.3)
_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_DECODES = "__eventpipe_decodes_content_encoding__"

H = TypeVar("H", bound=Callable[..., Any])


class BodyError(Refusal):
    """The body cannot be read: the problem answer says why."""


class BodyTooLarge(BodyError):
    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(
            413,
            "body-too-large",
            f"the body exceeds {limit} bytes ({setting}; decoded size when compressed)",
            field="body",
            reason=f"larger than {limit} bytes",
        )


class UnsupportedEncoding(BodyError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            415,
            "unsupported-content-encoding",
            detail,
            field="content-encoding",
            reason="not one of: gzip, deflate, identity",
            headers={"Accept-Encoding": ACCEPT_ENCODING},
        )


class CorruptBody(BodyError):
    """Bad compressed data, broken chunked framing, or a body that ended early."""

    def __init__(self, detail: str, reason: str) -> None:
        super().__init__(400, "malformed", detail, field="body", reason=reason)


def decodes_content_encoding(handler: H) -> H:
    """Mark a handler that reads its body with :func:`read_body` (so the service lets
    compressed bodies through to it)."""
    setattr(handler, _DECODES, True)
    return handler


def handler_decodes(handler: object) -> bool:
    return bool(getattr(handler, _DECODES, False))


def content_coding(headers: Mapping[str, str]) -> str | None:
    """``gzip``, ``deflate``, or None for no coding; raises UnsupportedEncoding."""
    value = headers.get("Content-Encoding")
    if value is None:
        return None
    codings = [c.strip().lower() for c in value.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _CODINGS:
        return _CODINGS[codings[0]]
    raise UnsupportedEncoding(
        "the body's Content-Encoding is not one eventpipe decodes; send it uncompressed, "
        f"or as one of: {ACCEPT_ENCODING}"
    )


def decode(raw: bytes, coding: str, limit: int, setting: str) -> bytes:
    """Inflate ``raw`` to at most ``limit`` bytes (BodyTooLarge past it, without
    inflating further); gzip may hold several members (RFC 1952)."""
    if not raw:
        return b""
    if coding == "gzip":
        wbits = _GZIP_WBITS
    else:  # "deflate" is zlib-wrapped (RFC 9110 8.4.1.2); some senders send it raw
        zlib_header = raw[0] & 0x0F == 8 and len(raw) > 1 and (raw[0] << 8 | raw[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    out: list[bytes] = []
    size = 0
    data = raw
    try:
        while True:
            chunk = inflater.decompress(data, limit - size + 1)
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit, setting)
            out.append(chunk)
            if inflater.eof:
                data = inflater.unused_data
                if not data:
                    return b"".join(out)
                if coding != "gzip":
                    raise CorruptBody("the compressed body has data after its end", "trailing data")
                inflater = zlib.decompressobj(wbits)  # the next gzip member
                continue
            data = inflater.unconsumed_tail
            if not data:
                raise CorruptBody(f"the {coding} body is truncated", f"truncated {coding}")
    except zlib.error as exc:
        raise CorruptBody(f"the body is not valid {coding}: {exc}", f"invalid {coding}") from None


async def read_body(request: web.Request, limit: int, setting: str) -> bytes:
    """The body, decoded, at most ``limit`` bytes: refused early on Content-Length,
    else while reading.  ``setting`` names the limit in the answer."""
    coding = content_coding(request.headers)
    length = request.content_length
    content = request.content
    if length is not None and length > limit:
        raise BodyTooLarge(limit, setting)
    try:
        if length is not None:
            raw = await content.readexactly(length) if length else b""
        else:
            chunks: list[bytes] = []
            size = 0
            async for chunk in content.iter_chunked(READ_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit, setting)
                chunks.append(chunk)
            raw = b"".join(chunks)
    except asyncio.IncompleteReadError:
        raise CorruptBody("the body ended early", "incomplete body") from None
    except web.RequestPayloadError:
        raise CorruptBody("the body's framing is broken", "bad chunked encoding") from None
    return raw if coding is None else decode(raw, coding, limit, setting)
