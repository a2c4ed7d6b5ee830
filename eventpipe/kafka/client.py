"""aiokafka keyword arguments from :class:`KafkaSettings`, and error wrapping."""

from __future__ import annotations

from typing import Any

from aiokafka import errors as ke

from eventpipe.errors import BrokerUnavailableError, PermanentError
from eventpipe.settings import KafkaSettings


def client_kwargs(k: KafkaSettings) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap,
        "client_id": k.client_id,
        "request_timeout_ms": k.request_timeout_ms,
        "metadata_max_age_ms": k.metadata_max_age_ms,
        "security_protocol": k.security_protocol,
    }
    if k.sasl_mechanism:
        kw["sasl_mechanism"] = k.sasl_mechanism
        kw["sasl_plain_username"] = k.sasl_username
        kw["sasl_plain_password"] = k.sasl_password.get_secret_value() if k.sasl_password else None
    return kw


def producer_kwargs(k: KafkaSettings) -> dict[str, Any]:
    kw = client_kwargs(k)
    kw.update(
        acks=k.acks,
        linger_ms=k.linger_ms,
        max_batch_size=k.max_batch_size,
        max_request_size=k.max_request_size,
        compression_type=None if k.compression == "none" else k.compression,
    )
    return kw


class RecordTooLargeError(PermanentError):
    pass


def wrap_kafka_error(exc: BaseException, what: str) -> Exception:
    """Map an aiokafka error to ours, by class: size and authorization errors are
    permanent, everything else about reaching the broker is retriable."""
    if isinstance(exc, ke.MessageSizeTooLargeError | ke.RecordTooLargeError):
        return RecordTooLargeError(f"{what}: record too large for the broker")
    if isinstance(
        exc,
        ke.TopicAuthorizationFailedError
        | ke.ClusterAuthorizationFailedError
        | ke.InvalidTopicError
        | ke.UnsupportedVersionError,
    ):
        return PermanentError(f"{what}: {type(exc).__name__}: {exc}")
    return BrokerUnavailableError(f"{what}: broker unavailable ({type(exc).__name__}: {exc})")
