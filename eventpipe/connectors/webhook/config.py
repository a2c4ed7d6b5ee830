"""Typed configuration of a webhook source (one ``sources:`` entry of ``type: webhook``).

An example is ``source.PLUGIN``'s ``example`` (shown in
docs/reference.md#source-webhook with every key, and loaded by
tests/unit/test_reference.py).

Secrets are ``SecretStr`` and never echoed, not even in config errors.  Cross-field
rules (``scheme: none`` only when written out, CloudEvents input without mapping
expressions, a parseable Standard Webhooks secret) are checked at load.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, SecretStr, field_validator, model_validator

from eventpipe.plugin import PluginConfig, SourceConfig
from eventpipe.topics import TopicName
from eventpipe.transforms.jq_engine import EngineName, JqCompileError, compile_program
from eventpipe.transforms.validate import ValidateConfig

_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
_EXT = re.compile(r"^[a-z0-9]+$")
WHSEC_PREFIX = "whsec_"
RESERVED_EXTENSIONS = frozenset(
    {"partitionkey", "whreceived", "whdigest", "whtimestamp", "whsignature"}
)

Secrets = Annotated[
    list[SecretStr],
    Field(
        min_length=1,
        max_length=16,
        description="signing secrets; a request signed with any of them passes (key rotation)",
    ),
]


def _header(v: str) -> str:
    if not _HEADER.match(v):
        raise ValueError(f"{v!r} is not a valid HTTP header name")
    return v.lower()


def decode_standard_secret(secret: str) -> bytes:
    """A Standard Webhooks secret: ``whsec_`` + base64 of the key (padding optional)."""
    raw = secret.removeprefix(WHSEC_PREFIX).strip()
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("is not base64 after the whsec_ prefix (value not shown)") from exc
    if len(key) < 16:
        raise ValueError("decodes to fewer than 16 bytes; use a longer key (value not shown)")
    return key


class _Verify(PluginConfig):
    tolerance_s: int = Field(300, ge=1, le=86_400, description="replay window, both directions")


class StandardWebhooksVerify(_Verify):
    """Standard Webhooks (Svix): ``webhook-id``, ``webhook-timestamp`` and
    ``webhook-signature`` headers; secrets are ``whsec_`` + base64."""

    scheme: Literal["standard-webhooks"] = Field(description="Standard Webhooks (Svix)")
    secrets: Secrets
    header_prefix: Literal["webhook", "svix"] = Field(
        "webhook", description="svix: read svix-id, svix-timestamp, svix-signature instead"
    )

    @field_validator("secrets")
    @classmethod
    def _decodable(cls, v: list[SecretStr]) -> list[SecretStr]:
        for i, s in enumerate(v):
            try:
                decode_standard_secret(s.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"secrets[{i}] {exc}") from None
        return v


class StripeVerify(_Verify):
    """Stripe's ``Stripe-Signature`` header (``t=...,v1=...``)."""

    scheme: Literal["stripe"] = Field(description="Stripe")
    secrets: Secrets


class GithubVerify(PluginConfig):
    """GitHub's ``X-Hub-Signature-256`` header; GitHub signs no timestamp."""

    scheme: Literal["github"] = Field(description="GitHub")
    secrets: Secrets


class HmacVerify(_Verify):
    """A provider's own HMAC: ``header: <prefix><encoded digest>`` over the body, or
    over ``<timestamp>.<body>`` when ``timestamp_header`` is set."""

    scheme: Literal["hmac"] = Field(description="a provider's own HMAC signature header")
    secrets: Secrets
    header: str = Field("x-signature", description="the header holding the signature")
    algorithm: Literal["sha1", "sha256", "sha384", "sha512"] = Field(
        "sha256", description="the HMAC's hash"
    )
    encoding: Literal["hex", "base64"] = Field("hex", description="how the digest is written")
    prefix: str = Field("", max_length=32, description="e.g. 'sha256=' before the digest")
    timestamp_header: str | None = Field(
        None,
        description="a header with the send time (Unix seconds): signed as <timestamp>.<body> "
        "and checked against tolerance_s",
    )
    id_header: str | None = Field(
        None, description="a header with the provider's delivery id (the event id, dedup)"
    )

    @field_validator("header", "timestamp_header", "id_header")
    @classmethod
    def _headers(cls, v: str | None) -> str | None:
        return None if v is None else _header(v)


class NoneVerify(PluginConfig):
    """No signature: anyone who can reach the URL can post (say it in the config)."""

    scheme: Literal["none"] = Field(description="no verification")


VerifyConfig = Annotated[
    StandardWebhooksVerify | StripeVerify | GithubVerify | HmacVerify | NoneVerify,
    Field(discriminator="scheme"),
]


class RateLimit(PluginConfig):
    per_second: float = Field(gt=0, description="requests a second, on average; above: 429")
    burst: int | None = Field(None, ge=1, description="bucket size; default one second's worth")


class Dedup(PluginConfig):
    enabled: bool = Field(True, description="answer a delivery id seen before as a duplicate")
    window_s: int = Field(86_400, ge=1, description="an id seen this recently is a duplicate")
    cache_size: int = Field(100_000, ge=0, description="recently stored ids kept in memory")
    timeout_s: float = Field(2.0, gt=0, description="a slower check lets the request through")


DeadLetterStatus = Literal[400, 401, 422]


def _default_dead_letter_on() -> list[DeadLetterStatus]:
    return [422]


class DeadLetters(PluginConfig):
    topic: TopicName | None = Field(None, description="default <topic>.dlq")
    on: list[DeadLetterStatus] = Field(
        default_factory=_default_dead_letter_on,
        description="rejections recorded; 401 lets unauthenticated senders write to it",
    )


def check_programs(exprs: dict[str, str | None], engine: EngineName) -> None:
    """Compile each jq expression at load; one ValueError names every bad one."""
    bad = []
    for field, source in exprs.items():
        if source is None:
            continue
        try:
            compile_program(source, engine)
        except JqCompileError as exc:
            bad.append(f"{field}: {exc.message}")
    if bad:
        raise ValueError("; ".join(bad))


class EventMapping(PluginConfig):
    """CloudEvent attributes as jq expressions over ``{body, headers}`` (header names
    lower-case; credentials and signatures left out).  A JSON string literal
    (``'"com.acme.paid"'``) is a constant."""

    id: str | None = Field(None, description="default: the provider's delivery id")
    id_fallback: Literal["digest", "reject"] = Field(
        "digest", description="no delivery id: the body's sha256 (stable on redelivery)"
    )
    source: str | None = Field(None, description="default /webhooks/<name>")
    type: str | None = Field(None, description="default per scheme, e.g. .body.type")
    subject: str | None = Field(None, description="jq; default: no subject")
    partitionkey: str | None = Field(
        None, description="jq; the record key (events of one key stay in order)"
    )
    extensions: dict[str, str] = Field(
        default_factory=dict, description="extension name (lower-case letters, digits) -> jq"
    )
    engine: EngineName = Field("jaq", description="jq engine: jaq (jaq-rs) or jq (libjq)")

    @model_validator(mode="after")
    def _programs(self) -> EventMapping:
        exprs = {f: getattr(self, f) for f in ("id", "type", "subject", "partitionkey")}
        exprs.update({f"extensions.{k}": v for k, v in self.extensions.items()})
        check_programs(exprs, self.engine)
        return self

    @field_validator("extensions")
    @classmethod
    def _ext_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _EXT.match(name):
                raise ValueError(f"extension {name!r}: names are lower-case letters and digits")
            if name in RESERVED_EXTENSIONS:
                raise ValueError(f"extension {name!r} is set by the webhook source itself")
        return v


class WebhookConfig(PluginConfig):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    topic: TopicName = Field(description="where the events go")
    verify: VerifyConfig = Field(description="how requests are authenticated")
    input: Literal["json", "cloudevents"] = Field(
        "json",
        description="json: any JSON body, mapped by event; cloudevents: the sender's own "
        "CloudEvents (binary, structured or batch)",
    )
    event: EventMapping = Field(
        default_factory=EventMapping, description="CloudEvent attributes as jq over the request"
    )
    body: Literal["raw", "parsed"] = Field(
        "raw",
        description="raw: the record value is the request body byte for byte (its "
        "signature can be checked again); parsed: re-encoded JSON plus a digest",
    )
    validate_: ValidateConfig | None = Field(
        None,
        alias="validate",
        description="check each body against a schema (a registry subject, or inline); "
        "a failure is a 422 and a dead letter",
    )
    registry_url: str | None = Field(None, description="default: the service's own registry")
    spool: Literal["none", "postgres"] = Field(
        "none",
        description="postgres: while the broker is down, requests are answered 202 from a "
        "PostgreSQL spool, relayed in order",
    )
    dedup: Dedup = Field(default_factory=Dedup, description="duplicate deliveries, by delivery id")
    dead_letter: DeadLetters = Field(
        default_factory=DeadLetters, description="where refused requests are recorded"
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1, le=64 * 1024 * 1024, description="largest body, decoded; more: 413"
    )
    max_batch_events: int = Field(
        1000, ge=1, description="most events in one request (input: cloudevents); more: 413"
    )
    rate_limit: RateLimit | None = Field(
        None, description="a token bucket over the source's requests; not set: no limit"
    )
    max_concurrency: int = Field(1024, ge=1, description="requests in progress; above: 503")
    request_timeout_s: float = Field(
        10.0, gt=0, description="the body must arrive within it; later waits stay under it"
    )
    publish_timeout_s: float = Field(5.0, gt=0, description="broker ack wait; then 503 or spool")
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 503 or 429 answer")

    @field_validator("validate_", mode="before")
    @classmethod
    def _subject_shorthand(cls, v: Any) -> Any:
        return {"subject": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _cross(self) -> WebhookConfig:
        if self.publish_timeout_s + self.dedup.timeout_s >= self.request_timeout_s:
            raise ValueError(
                "publish_timeout_s + dedup.timeout_s must stay under request_timeout_s "
                "(together they bound a request once its body arrived)"
            )
        if self.input == "cloudevents":
            ev = self.event
            given = [
                f"event.{f}"
                for f in ("id", "source", "type", "subject")
                if getattr(ev, f) is not None
            ]
            if given:
                raise ValueError(
                    f"input: cloudevents keeps the sender's attributes; drop {', '.join(given)}"
                )
        return self

    @property
    def scheme(self) -> str:
        return self.verify.scheme


_URL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _url_safe(name: str) -> str:
    if not set(name) <= _URL_SAFE or len(name) > 100:
        raise ValueError(
            "a webhook name is part of its URL: use letters, digits, '.', '_' and '-' (at most 100)"
        )
    return name


class WebhookEntry(WebhookConfig, SourceConfig):
    """A ``sources:`` entry of type webhook: ``POST /webhooks/<name>``."""

    type: Literal["webhook"] = Field(description="picks this source")
    name: Annotated[
        str,
        Field(min_length=1, description="unique among the sources; the URL is /webhooks/<name>"),
        AfterValidator(_url_safe),
    ]
