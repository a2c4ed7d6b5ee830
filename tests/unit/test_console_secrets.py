"""The console's masking of secrets and its signed logins and CSRF tokens (no I/O)."""

from __future__ import annotations

import time

import pytest

from eventpipe.console.redact import MASK, Redactor, secret_name
from eventpipe.console.session import Keys, check_who
from eventpipe.service.config import service_config
from eventpipe.settings import load_settings


@pytest.mark.parametrize(
    "name",
    [
        "x-signature",
        "http.webhook-signature",
        "Stripe-Signature",
        "ce_whsignature",
        "whsignature",
        "Authorization",
        "http.cookie",
        "x-api-key",
        "api_key",
        "client_secret",
        "password",
        "access-token",
        "X-Hub-Signature-256",
        "private_key",
    ],
)
def test_secret_names(name: str) -> None:
    assert secret_name(name)


@pytest.mark.parametrize(
    "name", ["x-request-id", "ce_id", "content-type", "tokens_used", "total", "whdigest", "key"]
)
def test_ordinary_names(name: str) -> None:
    assert not secret_name(name)


def test_configured_secrets_are_cut_out_of_any_text() -> None:
    s = load_settings(
        environ={"EVENTPIPE_DATABASE_URL": "postgresql://app:db-pass-77@h/db"},
        overrides={"service": {"admin_token": "admin-token-0123"}},
    )
    s = s.model_copy(
        update={
            "sources": [{"type": "webhook", "verify": {"secrets": ["whsec-abcdef", "no"]}}],
            "pipelines": [
                {"sinks": [{"http": {"url": "https://u:sink-pw-99@x/", "headers": {
                    "Authorization": "Bearer sink-bearer-42"}}}]}
            ],
        }
    )  # fmt: skip
    red = Redactor.from_settings(s)
    text = red.text(
        "admin-token-0123 db-pass-77 whsec-abcdef sink-pw-99 sink-bearer-42 no "
        "redis://user:other-pw@cache:6379/0"
    )
    for secret in (
        "admin-token-0123",
        "db-pass-77",
        "whsec-abcdef",
        "sink-pw-99",
        "sink-bearer-42",
    ):
        assert secret not in text
    assert "other-pw" not in text and "redis://user:[masked]@cache" in text
    assert text.endswith("@cache:6379/0") and " no " in text  # short values are left alone
    doc = red.doc(
        {"data": {"password": "p", "note": "has whsec-abcdef", "n": 1}, "whsignature": "s"}
    )
    assert doc == {
        "data": {"password": MASK, "note": f"has {MASK}", "n": 1},
        "whsignature": MASK,
    }
    assert red.header("x-signature", "abc") == (MASK, True)
    assert red.header("x-request-id", "r-1") == ("r-1", False)


def test_logins_are_signed_and_expire() -> None:
    keys = Keys("the-admin-token", ttl_s=60)
    session, cookie = keys.issue("ada")
    assert keys.session(cookie) == session and session.who == "ada"
    payload, sig = cookie.split(".")
    assert keys.session(payload + "." + sig[:-2] + "AA") is None  # a forged signature
    assert keys.session("garbage") is None and keys.session(None) is None
    assert Keys("another-token", ttl_s=60).session(cookie) is None  # a new token ends logins
    expired = Keys("the-admin-token", ttl_s=60)
    expired.ttl_s = -1
    assert expired.session(expired.issue("ada")[1]) is None
    assert session.expires > time.time()


def test_csrf_tokens_are_bound_to_their_session() -> None:
    keys = Keys("the-admin-token", ttl_s=60)
    token = keys.csrf("sid-1")
    assert keys.csrf_ok("sid-1", token)
    assert not keys.csrf_ok("sid-2", token)
    assert not keys.csrf_ok("sid-1", None) and not keys.csrf_ok(None, token)
    assert Keys(None, ttl_s=60).logins is False  # no token: CSRF still works, logins do not
    anon = Keys(None, ttl_s=60)
    assert anon.csrf_ok("anon-1", anon.csrf("anon-1"))


def test_operator_names() -> None:
    assert check_who("ada") is None
    assert check_who("  ") is not None and check_who("x" * 65) is not None
    assert check_who("a\nb") is not None


@pytest.mark.parametrize(
    ("given", "goes_to"),
    [
        ("/console/dlq?stage=sink", "/console/dlq?stage=sink"),
        ("//evil.example/console/", "/console/"),
        ("https://evil.example/", "/console/"),
        ("/console/..//evil.example", "/console/"),
        ("/console/\\evil", "/console/"),
        (None, "/console/"),
    ],
)
def test_after_a_login_only_the_console_itself(given: object, goes_to: str) -> None:
    from eventpipe.console.login_pages import safe_next

    assert safe_next(given) == goes_to


def test_secrets_of_typed_source_entries_are_cut_out() -> None:
    # The running service holds `sources:` as typed entries (SecretStr inside models),
    # not as the mappings of the YAML.
    s = load_settings(environ={})
    config = service_config(
        s.model_copy(
            update={
                "sources": [
                    {
                        "type": "webhook",
                        "name": "shop",
                        "topic": "shop.orders",
                        "verify": {
                            "scheme": "hmac",
                            "header": "x-sig",
                            "secrets": ["hmac-s3cret"],
                        },
                    }
                ]
            }
        )
    )
    assert not isinstance(config.sources[0], dict)
    assert "hmac-s3cret" not in Redactor.from_settings(config).text("sig hmac-s3cret")
