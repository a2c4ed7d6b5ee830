"""What the console never shows: secrets and signatures.

Two rules, applied to everything a page renders from a dead letter or a setting:

- by name: a header, CloudEvent attribute or JSON member whose name says it holds a
  credential or a signature (``x-signature``, ``webhook-signature``,
  ``stripe-signature``, ``authorization``, the ``whsignature`` extension, a
  ``password`` field ...) is shown as ``[masked]``;
- by value: the secrets the configuration holds (the admin token, webhook
  secrets, passwords in URLs, a sink's ``Authorization`` header ...) are cut out of
  any text that quotes them (an exception message, a stack trace, an HTTP
  answer), and so is the password of any ``scheme://user:password@host`` URL.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from eventpipe.settings import Settings

MASK = "[masked]"
# header prefixes under which a name is judged: a webhook reject's request headers,
# CloudEvent attributes in Kafka (ce_) and HTTP (ce-) binary mode
_PREFIXES = ("http.", "ce_", "ce-")
_NAMES = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "whsignature",
        "x-hub-signature",
        "x-hub-signature-256",
        "x-api-key",
        "apikey",
        "api-key",
        "api_key",
        "dsn",
    }
)
# a name is secret when one of its words (split on anything but letters and digits)
# is one of these, or two neighbouring words make one of the pairs
_WORDS = frozenset(
    {
        "signature",
        "secret",
        "secrets",
        "token",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "apikey",
        "privatekey",
    }
)
_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")})
_SPLIT = re.compile(r"[^a-z0-9]+")
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)")
_MIN_SECRET = 6  # shorter configured values are not cut out of text (too many false hits)


def secret_name(name: str) -> bool:
    """Whether a header, attribute or member called ``name`` holds a secret."""
    n = name.lower()
    for prefix in _PREFIXES:
        if n.startswith(prefix):
            n = n[len(prefix) :]
            break
    if n in _NAMES:
        return True
    words = [w for w in _SPLIT.split(n) if w]
    if any(w in _WORDS for w in words):
        return True
    return any(pair in _PAIRS for pair in itertools.pairwise(words))


class Redactor:
    """Masks secrets by name and cuts the configuration's secret values out of text."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        # longest first, so a secret that contains another is cut whole
        self._values = sorted({v for v in values if len(v) >= _MIN_SECRET}, key=len, reverse=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        return cls(_configured_secrets(settings))

    def text(self, value: str) -> str:
        out = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, value)
        for secret in self._values:
            if secret in out:
                out = out.replace(secret, MASK)
        return out

    def header(self, name: str, value: str) -> tuple[str, bool]:
        """(what to show, whether it was masked)."""
        if secret_name(name):
            return MASK, True
        return self.text(value), False

    def doc(self, value: Any) -> Any:
        """A JSON value with secret members masked and secret values cut out."""
        if isinstance(value, dict):
            return {
                k: MASK if secret_name(str(k)) and v is not None else self.doc(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.doc(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


def _configured_secrets(settings: Settings) -> Iterator[str]:
    s = settings
    for secret in (
        s.service.admin_token,
        s.kafka.sasl_password,
        s.kafka.ssl_key_password,
    ):
        if secret is not None:
            yield secret.get_secret_value()
    password = _url_password(s.database.url.get_secret_value())
    if password:
        yield password
    for section in (s.sources, s.pipelines):
        yield from _secrets_in(section, secret=False)


def _secrets_in(value: Any, *, secret: bool) -> Iterator[str]:
    """String values held under secret names anywhere in a config tree (a webhook's
    ``verify.secrets``, a sink's ``headers: {Authorization: ...}``), and passwords of
    URLs anywhere in it."""
    if isinstance(value, SecretStr):
        yield from _secrets_in(value.get_secret_value(), secret=True)
    elif isinstance(value, BaseModel):  # a typed entry (sources: WebhookEntry, ...)
        for k in type(value).model_fields:
            yield from _secrets_in(getattr(value, k), secret=secret or secret_name(k))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _secrets_in(v, secret=secret or secret_name(str(k)))
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _secrets_in(v, secret=secret)
    elif isinstance(value, str):
        if secret:
            yield value
            if value.lower().startswith("bearer "):
                yield value[7:]
        password = _url_password(value)
        if password:
            yield password


def _url_password(value: str) -> str | None:
    if "://" not in value:
        return None
    try:
        return urlsplit(value).password
    except ValueError:
        return None
