"""Console logins and CSRF tokens.

A login is a signed cookie (HttpOnly, SameSite=Strict, path /console/): the
operator's name, a random session id and an expiry, signed with HMAC-SHA256 under
a key derived from ``service.admin_token``.  Nothing is stored on the server, so
every instance behind a load balancer accepts it, and a new admin token ends
every login at once.

Every POST carries a CSRF token (synchronizer pattern): an HMAC of the session id
(or, before the login, of a random value in a second cookie) under a key also
derived from the token, checked in constant time.  Another site can neither read
it nor compute it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

import orjson

SESSION_COOKIE = "eventpipe_console"
ANON_COOKIE = "eventpipe_console_anon"
COOKIE_PATH = "/console/"
MAX_WHO = 64


@dataclass(frozen=True, slots=True)
class Session:
    who: str
    sid: str
    expires: int  # unix seconds


class Keys:
    """The signing keys.  Without an admin token nobody can log in, and CSRF tokens
    for anonymous readers are signed with a key of this process."""

    def __init__(self, admin_token: str | None, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        if admin_token:
            base = admin_token.encode()
            self._session: bytes | None = _derive(base, b"eventpipe-console-session-v1")
            self._csrf = _derive(base, b"eventpipe-console-csrf-v1")
        else:
            self._session = None
            self._csrf = os.urandom(32)

    @property
    def logins(self) -> bool:
        return self._session is not None

    def issue(self, who: str) -> tuple[Session, str]:
        """A new session for ``who`` and its cookie value."""
        assert self._session is not None, "no admin token: no logins"
        s = Session(who, secrets.token_urlsafe(16), int(time.time()) + self.ttl_s)
        payload = _b64(orjson.dumps({"who": s.who, "sid": s.sid, "exp": s.expires}))
        return s, f"{payload}.{_b64(_mac(self._session, payload.encode()))}"

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, if it is genuine and not expired."""
        if not cookie or self._session is None:
            return None
        payload, _, sig = cookie.partition(".")
        try:
            given = _unb64(sig)
            if not hmac.compare_digest(given, _mac(self._session, payload.encode())):
                return None
            doc = orjson.loads(_unb64(payload))
            s = Session(str(doc["who"]), str(doc["sid"]), int(doc["exp"]))
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None
        return s if s.expires > time.time() else None

    def csrf(self, binding: str) -> str:
        """The CSRF token of a session id (or of an anonymous visitor's cookie)."""
        return _b64(_mac(self._csrf, b"csrf|" + binding.encode()))

    def csrf_ok(self, binding: str | None, token: str | None) -> bool:
        if not binding or not token:
            return False
        return hmac.compare_digest(self.csrf(binding).encode(), token.encode())


def new_anon_id() -> str:
    return secrets.token_urlsafe(16)


def check_who(who: str) -> str | None:
    """Why an operator name cannot be used (None: it can)."""
    if not who.strip():
        return "required: your name, recorded with what you do"
    if len(who) > MAX_WHO:
        return f"at most {MAX_WHO} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in who):
        return "no control characters"
    return None


def _derive(key: bytes, label: bytes) -> bytes:
    return hmac.new(key, label, hashlib.sha256).digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
