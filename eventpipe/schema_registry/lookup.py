"""Fetching a subject's schema for whatever validates against it (pipelines'
``validate`` steps, webhook bodies): from a Confluent-compatible registry by URL,
or from eventpipe's own registry in the service's database.  And the start-time
check that every named subject is registered (:mod:`eventpipe.preflight`).

A subject (or a numbered version of it) that is not registered raises
:class:`SubjectMissingError`, told apart by class (and, from a remote registry,
by Confluent's ``error_code``), never by message: a pipeline waits for it, a
webhook refuses to start."""

from __future__ import annotations

import logging
from typing import Any

import psycopg.errors as pe
from psycopg_pool import AsyncConnectionPool

from eventpipe.errors import ConfigError, PermanentError, is_retriable
from eventpipe.preflight import Problem, Reach

from .client import SchemaRegistryClient
from .errors import RegistryClientError, SubjectNotFound, VersionNotFound
from .models import RegisteredSchema
from .registry import SchemaRegistry

log = logging.getLogger(__name__)
# Confluent's error codes for "subject not found" and "version not found"
_MISSING_CODES = frozenset({SubjectNotFound.error_code, VersionNotFound.error_code})


class SubjectMissingError(PermanentError):
    """The subject, or the numbered version asked for, is not registered (yet)."""

    def __init__(self, message: str, subject: str, version: Any) -> None:
        super().__init__(message)
        self.subject = subject
        self.version = version


def where_of(registry_url: str | None) -> str:
    """How messages name the registry a subject is looked up in."""
    return "the registry at its schema_registry URL" if registry_url else "eventpipe's registry"


async def fetch_registered(
    subject: str,
    version: Any,
    *,
    registry_url: str | None,
    pool: AsyncConnectionPool | None,
    timeout_s: float = 10.0,
) -> RegisteredSchema:
    """``subject`` at ``version`` as registered (its version number and id too).
    Raises :class:`SubjectMissingError` when it is not there, the registry's error
    otherwise (retriable when the registry cannot be reached)."""
    try:
        if registry_url:
            async with SchemaRegistryClient(registry_url, timeout_s=timeout_s) as client:
                return await client.get_version(subject, version)
        if pool is None:
            raise ConfigError([("subject", "needs a database for the schema registry")])
        return await SchemaRegistry(pool).get_version(subject, version, deleted=False)
    except (SubjectNotFound, VersionNotFound) as exc:
        raise SubjectMissingError(str(exc), subject, version) from exc
    except RegistryClientError as exc:
        if exc.error_code in _MISSING_CODES:
            raise SubjectMissingError(exc.message, subject, version) from exc
        raise


async def fetch_subject(
    subject: str,
    version: Any,
    *,
    registry_url: str | None,
    pool: AsyncConnectionPool | None,
    timeout_s: float = 10.0,
) -> tuple[str, str]:
    """``(schema_type, schema_text)`` of ``subject`` at ``version`` (errors as
    :func:`fetch_registered`)."""
    found = await fetch_registered(
        subject, version, registry_url=registry_url, pool=pool, timeout_s=timeout_s
    )
    return found.schema.schema_type, found.schema.schema


async def subject_problems(
    reach: Reach,
    wanted: list[tuple[str, str, Any]],
    *,
    registry_url: str | None,
    missing: str = "problem",
) -> list[Problem]:
    """A problem for each ``(path, subject, version)`` the registry does not hold;
    with ``missing="wait"`` (a pipeline waits for its subjects) a subject that is
    not registered yet is a warning (:meth:`Reach.warn`) instead."""
    if not wanted:
        return []
    where = where_of(registry_url)
    if registry_url and reach.offline:
        reach.skip("registry checks", "offline")
        return []
    if not registry_url and reach.pool is None:
        return []  # the database is not being checked: that is said once, by its owner
    problems: list[Problem] = []
    for path, subject, version in wanted:
        try:
            await fetch_subject(
                subject,
                version,
                registry_url=registry_url,
                pool=reach.pool,
                timeout_s=reach.timeout_s,
            )
        except Exception as exc:
            if isinstance(exc.__cause__, pe.UndefinedTable):  # wrapped by the registry
                reach.skip("registry checks", "the database is not migrated (eventpipe migrate)")
                return problems
            if is_retriable(exc):
                reach.skip(f"registry checks ({where})", f"not reachable ({exc})")
                return problems
            if missing == "wait" and isinstance(exc, SubjectMissingError):
                reach.warn(
                    path,
                    f"subject {subject!r} (version {version}) is not registered in {where} "
                    "yet: the pipeline will start waiting for it",
                )
                continue
            problems.append(
                (
                    path,
                    f"subject {subject!r} (version {version}) cannot be used from {where}: {exc}",
                )
            )
    return problems
