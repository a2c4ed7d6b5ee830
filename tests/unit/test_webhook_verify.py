"""Signature schemes, each signed by an independent implementation: the
``standardwebhooks`` package, Stripe's own helper (or its documented algorithm),
GitHub's documented HMAC, and a plain ``hmac`` call for the configurable scheme."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from multidict import CIMultiDict
from pydantic import TypeAdapter, ValidationError
from standardwebhooks import Webhook

from eventpipe.connectors.webhook.config import VerifyConfig
from eventpipe.connectors.webhook.verify import (
    BAD_SIGNATURE,
    FUTURE,
    MALFORMED,
    MISSING,
    STALE,
    VerificationError,
    Verifier,
    make_verifier,
)

KEY1 = b"k1-0123456789abcdef0123456789ab"
KEY2 = b"k2-fedcba9876543210fedcba987654"
WHSEC1 = "whsec_" + base64.b64encode(KEY1).decode()
WHSEC2 = "whsec_" + base64.b64encode(KEY2).decode()
STRIPE1 = "whsec_stripe_test_secret_one"
STRIPE2 = "whsec_stripe_test_secret_two"
BODY = b'{"type":"invoice.paid","data":{"id":"in_1","amount":1250,"note":"\xc3\xa9t\xc3\xa9"}}'
NOW = time.time()


def verifier(**cfg: Any) -> Verifier:
    return make_verifier(TypeAdapter(VerifyConfig).validate_python(cfg))


def refused(v: Verifier, headers: dict[str, str], body: bytes = BODY, now: float = NOW) -> str:
    with pytest.raises(VerificationError) as info:
        v.verify(CIMultiDict(headers), body, now)
    # what a refusal says never holds a secret or a signature
    text = f"{info.value} {info.value.detail} {info.value.field}"
    for secret in (WHSEC1, WHSEC2, STRIPE1, STRIPE2, KEY1.decode(), KEY2.decode()):
        assert secret not in text
    for value in headers.values():
        if len(value) > 20:
            assert value not in text
    return info.value.reason


# ------------------------------------------------------------ standard webhooks
def standard_headers(secret: str, body: bytes, msg_id: str = "msg_1", ts: float = NOW) -> dict:
    when = datetime.fromtimestamp(ts, UTC)
    sig = Webhook(secret).sign(msg_id, when, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(ts)), "webhook-signature": sig}


@pytest.fixture
def standard() -> Verifier:
    return verifier(scheme="standard-webhooks", secrets=[WHSEC1])


def test_standard_webhooks_signed_by_the_reference_library_is_accepted(standard: Verifier):
    now = time.time()  # the library checks against the wall clock, not NOW
    headers = standard_headers(WHSEC1, BODY, ts=now)
    v = standard.verify(CIMultiDict(headers), BODY, now)
    assert v.delivery_id == "msg_1" and v.timestamp == int(now)
    assert v.signature == headers["webhook-signature"]
    # and the library agrees with what we accepted
    Webhook(WHSEC1).verify(BODY, headers)


def test_standard_webhooks_header_names_are_case_insensitive(standard: Verifier):
    headers = {k.upper(): v for k, v in standard_headers(WHSEC1, BODY).items()}
    assert standard.verify(CIMultiDict(headers), BODY, NOW).delivery_id == "msg_1"


def test_standard_webhooks_wrong_secret(standard: Verifier):
    assert refused(standard, standard_headers(WHSEC2, BODY)) == BAD_SIGNATURE


def test_standard_webhooks_body_changed_after_signing(standard: Verifier):
    headers = standard_headers(WHSEC1, BODY)
    assert refused(standard, headers, BODY.replace(b"1250", b"9250")) == BAD_SIGNATURE


def test_standard_webhooks_id_is_signed(standard: Verifier):
    headers = standard_headers(WHSEC1, BODY) | {"webhook-id": "msg_other"}
    assert refused(standard, headers) == BAD_SIGNATURE


def test_standard_webhooks_stale_and_future_timestamps(standard: Verifier):
    assert refused(standard, standard_headers(WHSEC1, BODY, ts=NOW - 301)) == STALE
    assert refused(standard, standard_headers(WHSEC1, BODY, ts=NOW + 301)) == FUTURE
    # inside the tolerance both ways
    for ts in (NOW - 290, NOW + 290):
        standard.verify(CIMultiDict(standard_headers(WHSEC1, BODY, ts=ts)), BODY, NOW)


def test_standard_webhooks_tolerance_is_configurable():
    v = verifier(scheme="standard-webhooks", secrets=[WHSEC1], tolerance_s=10)
    assert refused(v, standard_headers(WHSEC1, BODY, ts=NOW - 11)) == STALE


def test_standard_webhooks_timestamp_signed_with_the_signature():
    v = verifier(scheme="standard-webhooks", secrets=[WHSEC1])
    headers = standard_headers(WHSEC1, BODY, ts=NOW - 10)
    headers["webhook-timestamp"] = str(int(NOW))  # fresh stamp on an old signature
    assert refused(v, headers) == BAD_SIGNATURE


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_webhooks_missing_headers(standard: Verifier, missing: str):
    headers = standard_headers(WHSEC1, BODY)
    del headers[missing]
    assert refused(standard, headers) == MISSING


def test_standard_webhooks_truncated_signature(standard: Verifier):
    headers = standard_headers(WHSEC1, BODY)
    headers["webhook-signature"] = headers["webhook-signature"][:-4]
    assert refused(standard, headers) == BAD_SIGNATURE


@pytest.mark.parametrize(
    "value", ["v1", "v2,abcd", "garbage", "v1,", "   ", "v1,\u00e9\u00e9\u00e9"]
)
def test_standard_webhooks_malformed_signature_header(standard: Verifier, value: str):
    headers = standard_headers(WHSEC1, BODY) | {"webhook-signature": value}
    assert refused(standard, headers) in (MALFORMED, MISSING)


@pytest.mark.parametrize("value", ["abc", "-5", "1.5e9", "", "9" * 30])
def test_standard_webhooks_malformed_timestamp(standard: Verifier, value: str):
    headers = standard_headers(WHSEC1, BODY) | {"webhook-timestamp": value}
    assert refused(standard, headers) in (MALFORMED, MISSING)


def test_standard_webhooks_rotation_several_secrets_and_signatures():
    rotated = verifier(scheme="standard-webhooks", secrets=[WHSEC2, WHSEC1])
    # an old sender still on secret 1
    rotated.verify(CIMultiDict(standard_headers(WHSEC1, BODY)), BODY, NOW)
    # a sender signing with both (space-separated), and one with only the new one
    both = standard_headers(WHSEC1, BODY)
    new_sig = standard_headers(WHSEC2, BODY)["webhook-signature"]
    both["webhook-signature"] = f"v1,bm9wZQ== {new_sig} {both['webhook-signature']}"
    only_new = verifier(scheme="standard-webhooks", secrets=[WHSEC2])
    only_new.verify(CIMultiDict(both), BODY, NOW)
    # a secret that was rotated out no longer verifies
    assert refused(only_new, standard_headers(WHSEC1, BODY)) == BAD_SIGNATURE


def test_standard_webhooks_secret_without_prefix_and_padding():
    bare = base64.b64encode(KEY1).decode().rstrip("=")
    v = verifier(scheme="standard-webhooks", secrets=[bare])
    v.verify(CIMultiDict(standard_headers(WHSEC1, BODY)), BODY, NOW)


def test_svix_header_prefix():
    v = verifier(scheme="standard-webhooks", secrets=[WHSEC1], header_prefix="svix")
    headers = {
        k.replace("webhook-", "svix-"): val for k, val in standard_headers(WHSEC1, BODY).items()
    }
    assert v.verify(CIMultiDict(headers), BODY, NOW).delivery_id == "msg_1"


def test_invalid_utf8_body_is_still_verified_as_bytes(standard: Verifier):
    body = b'{"a":"\xff\xfe"}'
    key = base64.b64decode(WHSEC1.removeprefix("whsec_"))
    ts = str(int(NOW))
    mac = hmac.new(key, b"msg_1." + ts.encode() + b"." + body, hashlib.sha256).digest()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }
    assert standard.verify(CIMultiDict(headers), body, NOW).delivery_id == "msg_1"


# ----------------------------------------------------------------------- stripe
def stripe_documented(payload: bytes, secret: str, ts: int) -> str:
    """https://docs.stripe.com/webhooks#verify-manually: HMAC-SHA256 of "{t}.{payload}"."""
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def stripe_library(payload: bytes, secret: str, ts: int) -> str:
    stripe = pytest.importorskip("stripe")
    return str(stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, ts))


STRIPE_SIGNERS: list[Callable[[bytes, str, int], str]] = [stripe_documented, stripe_library]


@pytest.fixture
def stripe_v() -> Verifier:
    return verifier(scheme="stripe", secrets=[STRIPE1])


@pytest.mark.parametrize("sign", STRIPE_SIGNERS, ids=["documented", "stripe-package"])
def test_stripe_accepted(stripe_v: Verifier, sign: Callable[[bytes, str, int], str]):
    header = sign(BODY, STRIPE1, int(NOW))
    v = stripe_v.verify(CIMultiDict({"Stripe-Signature": header}), BODY, NOW)
    assert v.timestamp == int(NOW) and v.delivery_id is None


def test_stripe_library_verifies_what_we_accept(stripe_v: Verifier):
    stripe = pytest.importorskip("stripe")
    header = stripe_documented(BODY, STRIPE1, int(time.time()))
    stripe_v.verify(CIMultiDict({"stripe-signature": header}), BODY, time.time())
    assert stripe.WebhookSignature.verify_header(BODY, header, STRIPE1, tolerance=300)


def test_stripe_refusals(stripe_v: Verifier):
    ts = int(NOW)
    assert refused(stripe_v, {"Stripe-Signature": stripe_documented(BODY, STRIPE2, ts)}) == (
        BAD_SIGNATURE
    )
    assert refused(stripe_v, {"Stripe-Signature": stripe_documented(BODY, STRIPE1, ts - 400)}) == (
        STALE
    )
    assert refused(stripe_v, {"Stripe-Signature": stripe_documented(BODY, STRIPE1, ts + 400)}) == (
        FUTURE
    )
    assert refused(stripe_v, {}) == MISSING
    good = stripe_documented(BODY, STRIPE1, ts)
    assert refused(stripe_v, {"Stripe-Signature": good[:-3]}) == BAD_SIGNATURE
    assert refused(stripe_v, {"Stripe-Signature": good.split(",")[1]}) == MALFORMED  # no t=
    assert refused(stripe_v, {"Stripe-Signature": f"t={ts}"}) == MALFORMED  # no v1=
    # v0 (test-mode legacy) signatures do not count
    v0 = good.replace("v1=", "v0=")
    assert refused(stripe_v, {"Stripe-Signature": v0}) == MALFORMED


def test_stripe_rotation_and_several_v1():
    v = verifier(scheme="stripe", secrets=[STRIPE2, STRIPE1])
    ts = int(NOW)
    one = stripe_documented(BODY, STRIPE1, ts)
    v.verify(CIMultiDict({"Stripe-Signature": one}), BODY, NOW)
    # Stripe sends several v1 while an endpoint secret is being rolled
    two = stripe_documented(BODY, STRIPE2, ts).split(",")[1]
    only2 = verifier(scheme="stripe", secrets=[STRIPE2])
    only2.verify(CIMultiDict({"Stripe-Signature": f"{one},{two}"}), BODY, NOW)


# ----------------------------------------------------------------------- github
def github_signature(secret: str, body: bytes) -> str:
    """docs.github.com: X-Hub-Signature-256 = "sha256=" + hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_github_accepted_with_delivery_id():
    v = verifier(scheme="github", secrets=["It's a Secret to Everybody"])
    # GitHub's documented test vector
    body = b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert github_signature("It's a Secret to Everybody", body) == expected
    headers = {"X-Hub-Signature-256": expected, "X-GitHub-Delivery": "72d3162e-cc78-11e3"}
    got = v.verify(CIMultiDict(headers), body, NOW)
    assert got.delivery_id == "72d3162e-cc78-11e3" and got.timestamp is None


def test_github_refusals_and_rotation():
    v = verifier(scheme="github", secrets=["new-secret", "old-secret"])
    assert v.verify(
        CIMultiDict({"x-hub-signature-256": github_signature("old-secret", BODY)}), BODY, NOW
    )
    assert refused(v, {"x-hub-signature-256": github_signature("other", BODY)}) == BAD_SIGNATURE
    assert refused(v, {}) == MISSING
    sha1 = "sha1=" + hmac.new(b"new-secret", BODY, hashlib.sha1).hexdigest()
    assert refused(v, {"x-hub-signature-256": sha1}) == MALFORMED
    truncated = github_signature("new-secret", BODY)[:-2]
    assert refused(v, {"x-hub-signature-256": truncated}) == BAD_SIGNATURE
    upper = github_signature("new-secret", BODY).upper().replace("SHA256=", "sha256=")
    assert v.verify(CIMultiDict({"x-hub-signature-256": upper}), BODY, NOW)


# ------------------------------------------------------------------------- hmac
def test_hmac_hex_with_prefix_and_delivery_header():
    v = verifier(
        scheme="hmac",
        secrets=["s3cret"],
        header="X-Acme-Signature",
        prefix="sha512=",
        algorithm="sha512",
        id_header="X-Acme-Id",
    )
    mac = hmac.new(b"s3cret", BODY, hashlib.sha512).hexdigest()
    got = v.verify(
        CIMultiDict({"x-acme-signature": "sha512=" + mac, "x-acme-id": "d-1"}), BODY, NOW
    )
    assert got.delivery_id == "d-1"
    assert refused(v, {"x-acme-signature": mac}) == MALFORMED  # prefix missing
    assert refused(v, {"x-acme-signature": "sha512=" + mac[:-1] + "0"}) in (BAD_SIGNATURE,)


def test_hmac_base64_with_signed_timestamp():
    v = verifier(
        scheme="hmac",
        secrets=["a", "b"],
        header="sig",
        encoding="base64",
        algorithm="sha256",
        timestamp_header="ts",
        tolerance_s=60,
    )
    ts = str(int(NOW))
    mac = base64.b64encode(
        hmac.new(b"b", ts.encode() + b"." + BODY, hashlib.sha256).digest()
    ).decode()
    assert v.verify(CIMultiDict({"sig": mac, "ts": ts}), BODY, NOW).timestamp == int(NOW)
    assert refused(v, {"sig": mac}) == MISSING
    assert refused(v, {"sig": mac, "ts": ts}, now=NOW + 61) == STALE
    assert refused(v, {"sig": mac.lower(), "ts": ts}) == BAD_SIGNATURE  # base64 is case-sensitive


def test_none_accepts_anything_but_only_when_written_out():
    v = verifier(scheme="none")
    assert v.verify(CIMultiDict({}), b"anything", NOW).delivery_id is None
    with pytest.raises(ValidationError):
        TypeAdapter(VerifyConfig).validate_python({})


# ----------------------------------------------------------------------- config
def test_bad_standard_secret_is_reported_without_its_value():
    secret = "whsec_not*base64*at*all!!"
    with pytest.raises(ValidationError) as info:
        verifier(scheme="standard-webhooks", secrets=[WHSEC1, secret])
    text = str(info.value)
    assert "secrets[1]" in text and secret not in text and WHSEC1 not in text


def test_short_standard_secret_refused():
    with pytest.raises(ValidationError, match="fewer than 16 bytes"):
        verifier(
            scheme="standard-webhooks", secrets=["whsec_" + base64.b64encode(b"short").decode()]
        )


def test_secrets_are_not_in_reprs():
    cfg = TypeAdapter(VerifyConfig).validate_python({"scheme": "stripe", "secrets": [STRIPE1]})
    assert STRIPE1 not in repr(cfg) and STRIPE1 not in str(cfg)


def test_redacted_headers_include_the_signature():
    v = verifier(scheme="hmac", secrets=["x"], header="X-Sig")
    assert {"x-sig", "authorization", "cookie"} <= v.redacted
    assert "stripe-signature" in verifier(scheme="stripe", secrets=["x"]).redacted
