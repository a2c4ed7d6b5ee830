"""Content-Encoding of request bodies: decoded within the limit, never past it."""

from __future__ import annotations

import gzip
import zlib

import pytest

from eventpipe.http_body import (
    BodyTooLarge,
    CorruptBody,
    UnsupportedEncoding,
    content_coding,
    decode,
)

BODY = b'{"type": "invoice.paid", "pad": "' + b"x" * 5000 + b'"}'


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, None),
        ("identity", None),
        ("gzip", "gzip"),
        ("X-GZIP", "gzip"),
        (" deflate ", "deflate"),
        ("identity, gzip", "gzip"),
    ],
)
def test_content_coding(header: str | None, coding: str | None) -> None:
    headers = {} if header is None else {"Content-Encoding": header}
    assert content_coding(headers) == coding


@pytest.mark.parametrize("header", ["br", "zstd", "compress", "gzip, gzip", "gzip, br", "\udcff"])
def test_codings_not_decoded_are_refused_with_the_accepted_ones(header: str) -> None:
    with pytest.raises(UnsupportedEncoding) as exc:
        content_coding({"Content-Encoding": header})
    assert exc.value.status == 415
    assert exc.value.headers == {"Accept-Encoding": "gzip, deflate"}
    assert "\udcff" not in exc.value.detail  # the header is not echoed


@pytest.mark.parametrize(
    ("coding", "raw"),
    [
        ("gzip", gzip.compress(BODY, mtime=0)),
        (
            "gzip",
            gzip.compress(BODY[:100], mtime=0) + gzip.compress(BODY[100:], mtime=0),
        ),  # two members
        ("deflate", zlib.compress(BODY)),
        ("deflate", zlib.compress(BODY)[2:-4]),  # raw deflate, as some senders do
    ],
)
def test_decoded_within_the_limit(coding: str, raw: bytes) -> None:
    assert decode(raw, coding, len(BODY), "max_body_bytes") == BODY


def test_one_byte_over_the_limit_is_too_large() -> None:
    with pytest.raises(BodyTooLarge) as exc:
        decode(gzip.compress(BODY, mtime=0), "gzip", len(BODY) - 1, "max_body_bytes")
    assert exc.value.status == 413 and "max_body_bytes" in exc.value.detail


def test_a_bomb_is_inflated_only_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    raw = bomb.compress(b"\0" * (64 << 20)) + bomb.flush()
    produced = []
    real = zlib.decompressobj

    class Counting:
        def __init__(self, wbits: int) -> None:
            self._d = real(wbits)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            assert max_length > 0  # never unbounded
            out = self._d.decompress(data, max_length)
            produced.append(len(out))
            return out

        def __getattr__(self, name: str) -> object:
            return getattr(self._d, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    with pytest.raises(BodyTooLarge):
        decode(raw, "gzip", 1 << 20, "max_body_bytes")
    assert sum(produced) == (1 << 20) + 1


@pytest.mark.parametrize(
    ("coding", "raw"),
    [
        ("gzip", b"\x1f\x8b\x08\x00not gzip at all"),
        ("gzip", gzip.compress(BODY, mtime=0)[:-10]),  # truncated
        ("gzip", gzip.compress(BODY, mtime=0) + b"trailing"),
        ("deflate", zlib.compress(BODY) + b"trailing"),
        ("deflate", b"\xff\xfe\xfd"),
    ],
)
def test_corrupt_bodies_are_400(coding: str, raw: bytes) -> None:
    with pytest.raises(CorruptBody) as exc:
        decode(raw, coding, 1 << 20, "max_body_bytes")
    assert exc.value.status == 400 and exc.value.field == "body"


def test_an_empty_body_stays_empty() -> None:
    assert decode(b"", "gzip", 10, "max_body_bytes") == b""
