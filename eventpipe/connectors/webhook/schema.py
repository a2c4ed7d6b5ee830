"""Schema validation of webhook bodies with the transforms' ``validate`` step.

A schema given inline is compiled at once; a subject is fetched when the source
starts, from ``registry_url`` (any Confluent-compatible registry) or from the
service's own registry in Postgres, then compiled by the same step.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from eventpipe.errors import ConfigError, RetriableError, is_retriable
from eventpipe.schema_registry.lookup import fetch_subject
from eventpipe.transforms.base import StepContext
from eventpipe.transforms.errors import Violation
from eventpipe.transforms.validate import ValidateConfig, ValidateStep


class BodyValidator:
    """``violations(value)``: an empty list when ``value`` matches the schema."""

    def __init__(self, step: ValidateStep) -> None:
        self._checker = step.checker
        self._is_valid = step.checker.is_valid
        self.schema_type = step.schema_type

    def violations(self, value: Any) -> list[Violation]:
        try:
            if self._is_valid(value):
                return []
        except (ValueError, TypeError, OverflowError) as exc:
            return [Violation("$", "type", f"not a JSON value: {exc}")]
        return self._checker.violations(value)


async def build_validator(
    cfg: ValidateConfig,
    *,
    registry_url: str | None,
    pool: AsyncConnectionPool | None,
    where: str,
) -> BodyValidator:
    """Raises ConfigError (paths under ``where``) or a retriable error when the
    registry cannot be reached."""
    resolved: tuple[str, str] | None = None
    if cfg.subject is not None:
        try:
            resolved = await fetch_subject(
                cfg.subject, cfg.version, registry_url=registry_url, pool=pool
            )
        except (RetriableError, ConfigError):
            raise
        except Exception as exc:
            if is_retriable(exc):
                raise
            raise ConfigError(
                [(f"{where}.validate.subject", f"cannot resolve {cfg.subject!r}: {exc}")]
            ) from exc

    def resolve(subject: str, version: object) -> tuple[str, str]:
        assert resolved is not None
        return resolved

    try:
        step = ValidateStep(cfg, name="validate", context=StepContext(resolve_schema=resolve))
    except ConfigError as exc:
        raise ConfigError([(f"{where}.validate.{p}", m) for p, m in exc.problems]) from exc
    return BodyValidator(step)
