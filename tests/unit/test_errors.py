from __future__ import annotations

import aiohttp
import psycopg.errors as pe
import pytest
from aiokafka import errors as ke

from eventpipe.errors import (
    BrokerUnavailableError,
    HttpStatusError,
    InvalidEventError,
    error_class_name,
    is_retriable,
)


@pytest.mark.parametrize(
    ("exc", "retriable"),
    [
        (pe.SerializationFailure(), True),
        (pe.DeadlockDetected(), True),
        (pe.OperationalError(), True),
        (pe.UniqueViolation(), False),
        (pe.DataError(), False),
        (ke.KafkaConnectionError(), True),
        (ke.RequestTimedOutError(), True),
        (ke.MessageSizeTooLargeError(), False),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (HttpStatusError(503), True),
        (HttpStatusError(429), True),
        (HttpStatusError(400), False),
        (HttpStatusError(404), False),
        (InvalidEventError("id", "missing"), False),
        (BrokerUnavailableError("down"), True),
        (ValueError("bad"), False),
        (RuntimeError("unknown"), False),
    ],
)
def test_classified_by_class(exc: BaseException, retriable: bool) -> None:
    assert is_retriable(exc) is retriable


def test_walks_cause_chain() -> None:
    class Wrapper(Exception):
        pass

    try:
        try:
            raise pe.SerializationFailure()
        except pe.SerializationFailure as inner:
            raise Wrapper("wrapped") from inner
    except Wrapper as outer:
        assert is_retriable(outer)


def test_message_text_never_decides() -> None:
    assert not is_retriable(RuntimeError("connection timed out, please retry"))


def test_aiohttp_response_errors() -> None:
    info = aiohttp.RequestInfo(
        url=__import__("yarl").URL("http://x"),
        method="GET",
        headers={},  # type: ignore[arg-type]
        real_url=__import__("yarl").URL("http://x"),
    )
    assert is_retriable(aiohttp.ClientResponseError(info, (), status=502))
    assert not is_retriable(aiohttp.ClientResponseError(info, (), status=422))


def test_error_class_name_is_qualified() -> None:
    assert error_class_name(pe.UniqueViolation()) == "psycopg.errors.UniqueViolation"
