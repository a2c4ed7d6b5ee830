"""Error classes and the one classifier (ARCHITECTURE.md section 7).

Every error is classified once, where it enters our code, as *retriable*
(connection loss, timeouts, serialization failures, 5xx/429) or *permanent*
(bad data, schema violations, 4xx, integrity errors).  Retriability is a
property of the class (as in aiokafka's ``errors.py``), never of the message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TypeVar

_E = TypeVar("_E", bound=BaseException)


class EventpipeError(Exception):
    """Base of every error eventpipe raises.  Permanent unless a subclass says so."""

    retriable: bool = False


class RetriableError(EventpipeError):
    """A transient failure: back off with jitter and try again."""

    retriable = True


class PermanentError(EventpipeError):
    """Retrying cannot help: the record goes to the dead-letter topic."""

    retriable = False


class ConfigError(PermanentError):
    """Configuration is invalid.  ``problems`` lists every (path, message) at once."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {path}: {msg}" for path, msg in problems)
        super().__init__(f"{len(problems)} configuration problem(s){where}:\n{lines}")


class InvalidEventError(PermanentError):
    """A CloudEvent (or its encoding) violates the spec.  ``field`` names the attribute."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class BrokerUnavailableError(RetriableError):
    """The Kafka broker could not be reached or did not acknowledge in time."""


class DatabaseUnavailableError(RetriableError):
    """PostgreSQL could not be reached."""


class SinkWriteError(EventpipeError):
    """A sink failed to write; retriable or not as its cause decides."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


HTTP_BODY_LIMIT = 4 * 1024
"""Bytes of an error answer's body that are kept (dead letters: ``eventpipe.dlq.http.body``)."""


class HttpStatusError(EventpipeError):
    """An HTTP peer answered with an error status: 5xx and 429 retriable, other 4xx not.

    ``body`` is what the peer answered (at most :data:`HTTP_BODY_LIMIT` bytes of it,
    when the caller cut it); ``message`` is what the error's text shows, the body by
    default."""

    def __init__(
        self,
        status: int,
        message: str = "",
        retry_after: float | None = None,
        *,
        body: str | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}{': ' + message if message else ''}")
        self.status = status
        self.retry_after = retry_after
        self.body = message if body is None else body
        self.retriable = status >= 500 or status in (408, 425, 429)


def find_cause(exc: BaseException, cls: type[_E]) -> _E | None:
    """The first exception of class ``cls`` in ``exc``'s cause chain (``exc`` included)."""
    for link in _chain(exc):
        if isinstance(link, cls):
            return link
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ if cur.__cause__ is not None else cur.__context__


_DATA_ERRORS = (ValueError, TypeError, KeyError, UnicodeError)
"""Python's own classes that say a record's data is bad (a transform's input)."""


def _classify_one(exc: BaseException, *, record: bool = True) -> bool | None:
    """True/False when this exception's class decides, None when it does not know.
    ``record=False``: Python's own data errors (:data:`_DATA_ERRORS`) do not decide."""
    if isinstance(exc, EventpipeError):
        return exc.retriable
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return True
    try:
        import psycopg.errors as pe
    except ImportError:  # pragma: no cover - psycopg is a hard dependency
        pe = None  # type: ignore[assignment]
    if pe is not None:
        if isinstance(exc, (pe.SerializationFailure, pe.DeadlockDetected, pe.LockNotAvailable)):
            return True
        if isinstance(exc, (pe.IntegrityError, pe.DataError, pe.ProgrammingError)):
            return False
        if isinstance(exc, (pe.OperationalError, pe.InterfaceError)):
            return True
    try:
        from aiokafka import errors as ke
    except ImportError:  # pragma: no cover
        ke = None
    if ke is not None and isinstance(exc, ke.KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(
            exc, (ke.KafkaConnectionError, ke.KafkaTimeoutError, ke.RequestTimedOutError)
        )
    try:
        import aiohttp
    except ImportError:  # pragma: no cover
        aiohttp = None  # type: ignore[assignment]
    if aiohttp is not None:
        if isinstance(exc, aiohttp.ClientResponseError):
            return exc.status >= 500 or exc.status in (408, 425, 429)
        if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError)):
            return True
    if record and isinstance(exc, _DATA_ERRORS):
        return False
    return None


def classify(exc: BaseException, *, record: bool = True) -> bool | None:
    """Walking ``__cause__`` / ``__context__``, the first class that knows decides:
    True retriable, False permanent, None when no class knows (an error that is not
    classified is a bug: the component stops loudly).

    ``record=False`` is for code that has no record at hand, such as a relay's
    session, which dead-letters the rows it cannot encode itself: there a
    ``ValueError``, ``TypeError``, ``KeyError`` or ``UnicodeError`` (bad data, in
    a transform) says nothing, so it is a bug unless a class further down the
    chain decides."""
    for link in _chain(exc):
        verdict = _classify_one(link, record=record)
        if verdict is not None:
            return verdict
    return None


def is_retriable(exc: BaseException) -> bool:
    """Classify by class (:func:`classify`).  Unknown errors are permanent, so bad
    data never retries forever."""
    return classify(exc) is True


def is_classified(exc: BaseException, *, record: bool = True) -> bool:
    """Whether a class in ``exc``'s chain decides retriable or permanent
    (:func:`classify`)."""
    return classify(exc, record=record) is not None


def is_bad_record(exc: BaseException) -> bool:
    """Whether a per-record path may dead-letter its record for ``exc``: a class in
    the chain says the record's data is bad for good (:func:`classify` with
    ``record=True`` is False).  Anything else is raised on: a retriable error is
    retried by the caller, and an error no class explains is a bug, which stops the
    component instead of moving good records to the dead-letter topic."""
    return classify(exc, record=True) is False


def error_class_name(exc: BaseException) -> str:
    """Fully qualified class name, for metrics labels and dead-letter headers."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


class MalformedEventError(PermanentError):
    """The bytes could not be parsed at all (bad JSON, bad UTF-8): HTTP 400."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class UnsupportedMediaTypeError(PermanentError):
    """A content type the binding does not accept: HTTP 415."""

    def __init__(self, content_type: str, accepted: list[str]) -> None:
        self.content_type = content_type
        self.accepted = accepted
        super().__init__(
            f"content type {content_type!r} is not accepted; use one of: {', '.join(accepted)}"
        )
