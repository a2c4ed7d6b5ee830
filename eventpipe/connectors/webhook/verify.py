"""Signature verification, one small class per scheme.

Every verifier checks the raw body bytes before anything parses them, compares in
constant time (``hmac.compare_digest``), accepts any of several configured secrets
(key rotation) and, where the scheme signs a timestamp, rejects one outside the
tolerance in either direction (replay protection).  A failure raises
:class:`VerificationError` naming a ``reason`` (a metrics label and the problem's
reason) and the header at fault; neither secrets nor signatures appear in it.

``headers`` is aiohttp's case-insensitive mapping, or a dict with lower-case names.
"""

from __future__ import annotations

import base64
import hmac
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

from eventpipe.errors import PermanentError

from .config import (
    GithubVerify,
    HmacVerify,
    NoneVerify,
    StandardWebhooksVerify,
    StripeVerify,
    VerifyConfig,
    decode_standard_secret,
)

MAX_SIGNATURE_HEADER = 4096
MAX_CANDIDATES = 16
MAX_ID_LENGTH = 256
ALWAYS_REDACTED = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

MISSING = "missing-header"
MALFORMED = "malformed-header"
BAD_SIGNATURE = "bad-signature"
STALE = "stale-timestamp"
FUTURE = "future-timestamp"
REASONS = (MISSING, MALFORMED, BAD_SIGNATURE, STALE, FUTURE)


class VerificationError(PermanentError):
    """The request is not authentic (HTTP 401)."""

    def __init__(self, reason: str, field: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.detail = detail


class Verified(NamedTuple):
    """What a verified request told us: the provider's delivery id and signed
    timestamp when the scheme carries them, and the signature header's value (kept
    in the event so the signature can be checked again later)."""

    delivery_id: str | None
    timestamp: int | None
    signature: str | None


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise VerificationError(MISSING, name, f"the {name} header is missing")
    if len(value) > MAX_SIGNATURE_HEADER:
        raise VerificationError(MALFORMED, name, f"the {name} header is too long")
    return value


def _timestamp(value: str, name: str, now: float, tolerance: int) -> int:
    if not (0 < len(value) <= 12 and value.isascii() and value.isdigit()):
        raise VerificationError(MALFORMED, name, f"{name} must be whole seconds since the epoch")
    ts = int(value)
    if ts < now - tolerance:
        raise VerificationError(
            STALE, name, f"the signed timestamp is older than the {tolerance}s tolerance"
        )
    if ts > now + tolerance:
        raise VerificationError(
            FUTURE, name, f"the signed timestamp is more than {tolerance}s in the future"
        )
    return ts


def _ascii(value: str) -> bytes | None:
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        return None


def _raw(value: str) -> bytes:
    """A header value's original bytes (aiohttp decodes them as UTF-8 with
    surrogateescape), for signed content."""
    return value.encode("utf-8", "surrogateescape")


def _any_match(expected: list[bytes], candidates: list[bytes]) -> bool:
    """Compare every candidate with every expected digest, without stopping early."""
    ok = False
    for c in candidates:
        for e in expected:
            ok |= hmac.compare_digest(e, c)
    return ok


class Verifier(ABC):
    scheme: ClassVar[str]
    signature_headers: tuple[str, ...] = ()

    @property
    def redacted(self) -> frozenset[str]:
        """Header names whose values never leave the process (logs, dead letters)."""
        return ALWAYS_REDACTED | frozenset(self.signature_headers)

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified: ...


class StandardWebhooksVerifier(Verifier):
    """Standard Webhooks: ``v1,<base64 HMAC-SHA256>`` of ``{id}.{timestamp}.{body}``,
    several signatures space-separated; secrets ``whsec_<base64>``."""

    scheme = "standard-webhooks"

    def __init__(self, cfg: StandardWebhooksVerify) -> None:
        self._keys = [decode_standard_secret(s.get_secret_value()) for s in cfg.secrets]
        self._tolerance = cfg.tolerance_s
        p = cfg.header_prefix
        self._id, self._ts, self._sig = f"{p}-id", f"{p}-timestamp", f"{p}-signature"
        self.signature_headers = (self._sig,)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        msg_id = _required(headers, self._id)
        ts_text = _required(headers, self._ts)
        sig = _required(headers, self._sig)
        if len(msg_id) > MAX_ID_LENGTH:
            raise VerificationError(MALFORMED, self._id, f"{self._id} is too long")
        ts = _timestamp(ts_text, self._ts, now, self._tolerance)
        signed = b"%s.%s.%s" % (_raw(msg_id), ts_text.encode("ascii"), body)
        expected = [base64.b64encode(hmac.digest(k, signed, "sha256")) for k in self._keys]
        candidates = []
        for item in sig.split()[:MAX_CANDIDATES]:
            version, _, value = item.partition(",")
            raw = _ascii(value) if version == "v1" else None
            if raw:
                candidates.append(raw)
        if not candidates:
            raise VerificationError(MALFORMED, self._sig, f"{self._sig} holds no v1 signature")
        if not _any_match(expected, candidates):
            raise VerificationError(BAD_SIGNATURE, self._sig, "no signature matches")
        return Verified(msg_id, ts, sig)


class StripeVerifier(Verifier):
    """Stripe: ``Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of "{t}.{body}">`` keyed
    with the endpoint secret as text."""

    scheme = "stripe"
    HEADER = "stripe-signature"
    signature_headers = (HEADER,)

    def __init__(self, cfg: StripeVerify) -> None:
        self._keys = [s.get_secret_value().encode("utf-8") for s in cfg.secrets]
        self._tolerance = cfg.tolerance_s

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        header = _required(headers, self.HEADER)
        t: str | None = None
        candidates = []
        for item in header.split(",")[: MAX_CANDIDATES * 2]:
            key, _, value = item.strip().partition("=")
            if key == "t":
                t = value
            elif key == "v1":
                raw = _ascii(value)
                if raw:
                    candidates.append(raw)
        if t is None:
            raise VerificationError(MALFORMED, self.HEADER, "Stripe-Signature has no t= timestamp")
        if not candidates:
            raise VerificationError(MALFORMED, self.HEADER, "Stripe-Signature has no v1 signature")
        ts = _timestamp(t, self.HEADER, now, self._tolerance)
        signed = b"%s.%s" % (t.encode("ascii"), body)
        expected = [hmac.digest(k, signed, "sha256").hex().encode() for k in self._keys]
        if not _any_match(expected, candidates):
            raise VerificationError(BAD_SIGNATURE, self.HEADER, "no signature matches")
        return Verified(None, ts, header)


class GithubVerifier(Verifier):
    """GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``; the
    delivery id is ``X-GitHub-Delivery``.  GitHub signs no timestamp, so replays
    are caught by the delivery-id dedup window, not by a tolerance."""

    scheme = "github"
    HEADER = "x-hub-signature-256"
    DELIVERY = "x-github-delivery"
    signature_headers = (HEADER,)

    def __init__(self, cfg: GithubVerify) -> None:
        self._keys = [s.get_secret_value().encode("utf-8") for s in cfg.secrets]

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        header = _required(headers, self.HEADER)
        algo, sep, value = header.partition("=")
        raw = _ascii(value.lower())
        if algo != "sha256" or not sep or not raw:
            raise VerificationError(MALFORMED, self.HEADER, "expected sha256=<hex digest>")
        expected = [hmac.digest(k, body, "sha256").hex().encode() for k in self._keys]
        if not _any_match(expected, [raw]):
            raise VerificationError(BAD_SIGNATURE, self.HEADER, "the signature does not match")
        delivery = headers.get(self.DELIVERY) or None
        if delivery is not None and len(delivery) > MAX_ID_LENGTH:
            raise VerificationError(MALFORMED, self.DELIVERY, f"{self.DELIVERY} is too long")
        return Verified(delivery, None, header)


class HmacVerifier(Verifier):
    """A configurable HMAC: header, algorithm, hex or base64, optional prefix, and an
    optional signed timestamp (then the content is ``{timestamp}.{body}``)."""

    scheme = "hmac"

    def __init__(self, cfg: HmacVerify) -> None:
        self._keys = [s.get_secret_value().encode("utf-8") for s in cfg.secrets]
        self._cfg = cfg
        self.signature_headers = (cfg.header,)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        cfg = self._cfg
        header = _required(headers, cfg.header)
        if not header.startswith(cfg.prefix):
            raise VerificationError(MALFORMED, cfg.header, f"expected {cfg.prefix!r} first")
        value = header[len(cfg.prefix) :].strip()
        ts: int | None = None
        signed = body
        if cfg.timestamp_header is not None:
            ts_text = _required(headers, cfg.timestamp_header)
            ts = _timestamp(ts_text, cfg.timestamp_header, now, cfg.tolerance_s)
            signed = b"%s.%s" % (ts_text.encode("ascii"), body)
        raw = _ascii(value.lower() if cfg.encoding == "hex" else value)
        if not raw:
            raise VerificationError(MALFORMED, cfg.header, "the signature is not ASCII")
        digests = [hmac.digest(k, signed, cfg.algorithm) for k in self._keys]
        if cfg.encoding == "hex":
            expected = [d.hex().encode() for d in digests]
        else:
            expected = [base64.b64encode(d) for d in digests]
        if not _any_match(expected, [raw]):
            raise VerificationError(BAD_SIGNATURE, cfg.header, "the signature does not match")
        delivery = headers.get(cfg.id_header) if cfg.id_header else None
        if delivery is not None and len(delivery) > MAX_ID_LENGTH:
            raise VerificationError(MALFORMED, cfg.id_header or "", "the delivery id is too long")
        return Verified(delivery or None, ts, header)


class NoVerifier(Verifier):
    """``scheme: none``: accepted only when a config says so explicitly."""

    scheme = "none"

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        return Verified(None, None, None)


def make_verifier(cfg: VerifyConfig) -> Verifier:
    if isinstance(cfg, StandardWebhooksVerify):
        return StandardWebhooksVerifier(cfg)
    if isinstance(cfg, StripeVerify):
        return StripeVerifier(cfg)
    if isinstance(cfg, GithubVerify):
        return GithubVerifier(cfg)
    if isinstance(cfg, HmacVerify):
        return HmacVerifier(cfg)
    assert isinstance(cfg, NoneVerify)
    return NoVerifier()
