from __future__ import annotations

import aiohttp
import psycopg.errors as pe
import pytest
from aiokafka import errors as ke

from eventpipe.errors import (
    BrokerUnavailableError,
    HttpStatusError,
    InvalidEventError,
    PermanentError,
    classify,
    error_class_name,
    is_bad_record,
    is_classified,
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


@pytest.mark.parametrize(
    ("exc", "verdict", "in_a_relay"),
    [
        (PermanentError("setup"), False, False),
        (pe.InsufficientPrivilege(), False, False),  # permission denied
        (ke.MessageSizeTooLargeError(), False, False),
        (pe.OperationalError(), True, True),
        (ValueError("bad"), False, None),  # a record's bad data; no record: a bug
        (TypeError("bug"), False, None),
        (KeyError("k"), False, None),
        (RuntimeError("bug"), None, None),
        (AttributeError("bug"), None, None),
    ],
)
def test_what_no_class_decides_is_unclassified(
    exc: BaseException, verdict: bool | None, in_a_relay: bool | None
) -> None:
    assert classify(exc) is verdict
    assert is_classified(exc) is (verdict is not None)
    assert classify(exc, record=False) is in_a_relay
    assert is_classified(exc, record=False) is (in_a_relay is not None)


def test_an_unclassified_error_wrapping_a_classified_one_is_classified() -> None:
    try:
        try:
            raise pe.OperationalError("gone")
        except pe.OperationalError as inner:
            raise RuntimeError("while reconnecting") from inner
    except RuntimeError as outer:
        assert classify(outer, record=False) is True


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


class _Bug(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "bad"),
    [
        (InvalidEventError("time", "not a timestamp"), True),
        (ValueError("malformed array literal"), True),  # a converter's: the row's data
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), True),
        (_Bug("a bug"), False),  # no class explains it: raised on, the component stops
        (RuntimeError("a bug"), False),
        (AttributeError("a bug"), False),
        (ConnectionResetError(), False),  # retriable: the caller retries the record
        (BrokerUnavailableError("away"), False),
    ],
)
def test_only_bad_data_dead_letters_a_record(exc: BaseException, bad: bool) -> None:
    assert is_bad_record(exc) is bad
