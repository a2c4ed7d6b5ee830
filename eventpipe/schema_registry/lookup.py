"""Fetching a subject's schema for whatever validates against it (pipelines'
``validate`` steps, webhook bodies): from a Confluent-compatible registry by URL,
or from eventpipe's own registry in the service's database.  And the start-time
check that every named subject is registered (:mod:`eventpipe.preflight`)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg.errors as pe
from psycopg_pool import AsyncConnectionPool

from eventpipe.errors import ConfigError, is_retriable
from eventpipe.preflight import Problem, Reach

from .client import SchemaRegistryClient
from .registry import SchemaRegistry

log = logging.getLogger(__name__)


async def fetch_subject(
    subject: str,
    version: Any,
    *,
    registry_url: str | None,
    pool: AsyncConnectionPool | None,
    timeout_s: float = 10.0,
) -> tuple[str, str]:
    """``(schema_type, schema_text)`` of ``subject`` at ``version``.  Raises the
    registry's error (permanent when the subject or version is not there,
    retriable when the registry cannot be reached)."""
    if registry_url:
        async with SchemaRegistryClient(registry_url, timeout_s=timeout_s) as client:
            found = await client.get_version(subject, version)
    else:
        if pool is None:
            raise ConfigError([("subject", "needs a database for the schema registry")])
        found = await SchemaRegistry(pool).get_version(subject, version, deleted=False)
    return found.schema.schema_type, found.schema.schema


async def subject_problems(
    reach: Reach, wanted: list[tuple[str, str, Any]], *, registry_url: str | None
) -> list[Problem]:
    """A problem for each ``(path, subject, version)`` the registry does not hold."""
    if not wanted:
        return []
    where = "the registry at its schema_registry URL" if registry_url else "eventpipe's registry"
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
            problems.append(
                (
                    path,
                    f"subject {subject!r} (version {version}) cannot be used from {where}: {exc}",
                )
            )
    return problems
