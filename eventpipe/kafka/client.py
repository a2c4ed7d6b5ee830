"""Kafka client keyword arguments from :class:`KafkaSettings`, and error wrapping.

:func:`client_kwargs` is the one place settings become a client's connection and
security arguments (TLS context, SASL); every aiokafka client is built from it,
and :func:`faust_app_kwargs` turns the same arguments into a faust app's broker
settings, so a pipeline connects as the sources and sinks do.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from pathlib import Path
from typing import Any

from aiokafka import errors as ke
from aiokafka.helpers import create_ssl_context

from eventpipe.errors import BrokerUnavailableError, PermanentError
from eventpipe.settings import KafkaSettings


@functools.lru_cache(maxsize=8)
def _ssl_context(
    cafile: Path | None,
    certfile: Path | None,
    keyfile: Path | None,
    password: str | None,
    check_hostname: bool,
) -> ssl.SSLContext:
    ctx = create_ssl_context(
        cafile=str(cafile) if cafile else None,
        certfile=str(certfile) if certfile else None,
        keyfile=str(keyfile) if keyfile else None,
        password=password,
    )
    ctx.check_hostname = check_hostname
    return ctx


def security_kwargs(k: KafkaSettings) -> dict[str, Any]:
    """``security_protocol`` and, as it needs them, ``ssl_context`` and SASL credentials."""
    kw: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.security_protocol in ("SSL", "SASL_SSL"):
        kw["ssl_context"] = _ssl_context(
            k.ssl_cafile,
            k.ssl_certfile,
            k.ssl_keyfile,
            k.ssl_key_password.get_secret_value() if k.ssl_key_password else None,
            k.ssl_check_hostname,
        )
    if k.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        kw["sasl_mechanism"] = k.sasl_mechanism
        kw["sasl_plain_username"] = k.sasl_username
        kw["sasl_plain_password"] = k.sasl_password.get_secret_value() if k.sasl_password else None
    return kw


def client_kwargs(k: KafkaSettings) -> dict[str, Any]:
    return {
        "bootstrap_servers": k.bootstrap,
        "client_id": k.client_id,
        "request_timeout_ms": k.request_timeout_ms,
        "metadata_max_age_ms": k.metadata_max_age_ms,
        **security_kwargs(k),
    }


def faust_app_kwargs(k: KafkaSettings, *, client_id: str) -> dict[str, Any]:
    """A faust app's ``broker``, ``broker_client_id`` and ``broker_credentials``,
    made from :func:`client_kwargs` (faust hands them to its aiokafka clients)."""
    import faust

    kw = client_kwargs(k)
    protocol = kw["security_protocol"]
    credentials: Any = None
    if protocol == "SSL":
        credentials = faust.SSLCredentials(kw["ssl_context"])
    elif protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        credentials = faust.SASLCredentials(
            username=kw["sasl_plain_username"],
            password=kw["sasl_plain_password"],
            mechanism=kw["sasl_mechanism"],
            ssl_context=kw.get("ssl_context"),
        )
    return {
        "broker": [f"kafka://{h.strip()}" for h in str(kw["bootstrap_servers"]).split(",")],
        "broker_client_id": client_id,
        "broker_credentials": credentials,
    }


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


BOOTSTRAP_HINT = "kafka.bootstrap / EVENTPIPE_KAFKA_BOOTSTRAP"


async def start_client(
    client: Any, kafka: KafkaSettings, doing: str, *, hint: str = BOOTSTRAP_HINT
) -> None:
    """``client.start()`` (an aiokafka producer, consumer or admin client).  On an
    aiokafka error the client is closed and the error raised as ours, by class
    (:func:`wrap_kafka_error`); an unreachable broker names the address and where
    it is set: "cannot reach the Kafka broker at X to <doing> (...); check <hint>"."""
    try:
        await client.start()
    except ke.KafkaError as exc:
        await _close_quietly(client)
        err = wrap_kafka_error(exc, doing)
        if isinstance(err, BrokerUnavailableError):
            err = BrokerUnavailableError(
                f"cannot reach the Kafka broker at {kafka.bootstrap} to {doing} "
                f"({type(exc).__name__}); check {hint}"
            )
        raise err from exc


async def _close_quietly(client: Any) -> None:
    """Close a client that failed to start.  aiokafka's consumer may raise its own
    coordinator task's CancelledError when stopped right after start, which must
    not pass for ours being cancelled."""
    close = getattr(client, "stop", None) or client.close
    try:
        await close()
    except Exception:
        pass
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


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
