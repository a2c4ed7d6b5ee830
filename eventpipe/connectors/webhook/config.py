"""Typed configuration of a webhook source (one ``sources:`` entry of ``type: webhook``).

```yaml
sources:
  - type: webhook
    name: billing                       # served at POST /webhooks/billing
    topic: billing.events
    verify:
      scheme: standard-webhooks         # standard-webhooks | stripe | github | hmac | none
      secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]   # several: key rotation
      tolerance_s: 300
    event:                              # jq over {body, headers}
      type: .body.type
      subject: .body.data.customer_id
      partitionkey: .body.data.customer_id
    validate: billing-value             # a schema registry subject (or {schema: {...}})
    spool: postgres                     # broker down: 202 from a Postgres spool
    rate_limit: {per_second: 500, burst: 1000}
```

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

Secrets = Annotated[list[SecretStr], Field(min_length=1, max_length=16)]


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
    scheme: Literal["standard-webhooks"]
    secrets: Secrets
    header_prefix: Literal["webhook", "svix"] = "webhook"

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
    scheme: Literal["stripe"]
    secrets: Secrets


class GithubVerify(PluginConfig):
    scheme: Literal["github"]
    secrets: Secrets


class HmacVerify(_Verify):
    """A provider's own HMAC: ``header: <prefix><encoded digest>`` over the body, or
    over ``<timestamp>.<body>`` when ``timestamp_header`` is set."""

    scheme: Literal["hmac"]
    secrets: Secrets
    header: str = "x-signature"
    algorithm: Literal["sha1", "sha256", "sha384", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field("", max_length=32, description="e.g. 'sha256=' before the digest")
    timestamp_header: str | None = None
    id_header: str | None = None

    @field_validator("header", "timestamp_header", "id_header")
    @classmethod
    def _headers(cls, v: str | None) -> str | None:
        return None if v is None else _header(v)


class NoneVerify(PluginConfig):
    scheme: Literal["none"]


VerifyConfig = Annotated[
    StandardWebhooksVerify | StripeVerify | GithubVerify | HmacVerify | NoneVerify,
    Field(discriminator="scheme"),
]


class RateLimit(PluginConfig):
    per_second: float = Field(gt=0)
    burst: int | None = Field(None, ge=1, description="bucket size; default one second's worth")


class Dedup(PluginConfig):
    enabled: bool = True
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
    subject: str | None = None
    partitionkey: str | None = None
    extensions: dict[str, str] = Field(default_factory=dict)
    engine: EngineName = "jaq"

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

    topic: TopicName
    verify: VerifyConfig
    input: Literal["json", "cloudevents"] = "json"
    event: EventMapping = Field(default_factory=EventMapping)
    body: Literal["raw", "parsed"] = Field(
        "raw",
        description="raw: the record value is the request body byte for byte (its "
        "signature can be checked again); parsed: re-encoded JSON plus a digest",
    )
    validate_: ValidateConfig | None = Field(None, alias="validate")
    registry_url: str | None = Field(None, description="default: the service's own registry")
    spool: Literal["none", "postgres"] = "none"
    dedup: Dedup = Field(default_factory=Dedup)
    dead_letter: DeadLetters = Field(default_factory=DeadLetters)
    max_body_bytes: int = Field(1024 * 1024, ge=1, le=64 * 1024 * 1024)
    max_batch_events: int = Field(1000, ge=1, description="input: cloudevents batches")
    rate_limit: RateLimit | None = None
    max_concurrency: int = Field(1024, ge=1, description="requests in progress; above: 503")
    request_timeout_s: float = Field(
        10.0, gt=0, description="the body must arrive within it; later waits stay under it"
    )
    publish_timeout_s: float = Field(5.0, gt=0, description="broker ack wait; then 503 or spool")
    retry_after_s: int = Field(5, ge=1)

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

    type: Literal["webhook"]
    name: Annotated[str, Field(min_length=1), AfterValidator(_url_safe)]
