"""Start-time checks of what a config names: tables, topics, schema subjects.

A config can be valid on paper and still fail every record it meets: a Postgres
sink whose table is missing, a source whose topic does not exist, a schema
subject nobody registered.  Each of those would fill a dead-letter topic instead
of stopping the service, and the first one found used to hide the next until
the next start.  So before any component starts, the service runs every check
of the roles it runs and raises one :class:`~eventpipe.errors.ConfigError`
listing every problem with its path (Debezium's ``validate(ALL_FIELDS)``, held
against the live systems); ``eventpipe check`` runs the same checks on a file.

A check gets a :class:`Reach`: the topic admin and the database pool, each None
when that system is not being checked (``--offline``, or it did not answer).  A
check that cannot look says so with :meth:`Reach.skip` rather than guessing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from eventpipe.kafka.admin import TopicAdmin
    from eventpipe.settings import Settings

log = logging.getLogger(__name__)
Problem = tuple[str, str]
M = TypeVar("M", bound=BaseModel)


@dataclass
class Reach:
    """What the checks may use.  ``offline``: contact nothing at all (remote
    registries and sinks' own databases included)."""

    settings: Settings
    admin: TopicAdmin | None = None
    pool: AsyncConnectionPool | None = None
    offline: bool = False
    timeout_s: float = 10.0
    skipped: list[str] = field(default_factory=list)

    def skip(self, what: str, why: str) -> None:
        note = f"{what} skipped: {why}"
        if note not in self.skipped:
            self.skipped.append(note)

    async def missing_topics(self, topics: Iterable[str]) -> list[str] | None:
        """The topics of ``topics`` the broker does not have; None when not checked."""
        if self.admin is None:
            return None
        existing = await self.admin.list_topics()
        return [t for t in topics if t not in existing]


def source_entries(settings: Settings, kind: str, model: type[M]) -> list[tuple[int, M]]:
    """``(index, config)`` of each ``sources:`` entry of ``kind`` whose config is
    valid (the others were reported at load)."""
    out = []
    for i, entry in enumerate(settings.sources):
        if entry.get("type") != kind:
            continue
        try:
            cfg = model.model_validate(
                {k: v for k, v in entry.items() if k not in ("type", "name")}
            )
        except ValidationError:
            continue
        out.append((i, cfg))
    return out


async def topic_problems(reach: Reach, wanted: list[tuple[str, str]]) -> list[Problem]:
    """A problem for each ``(path, topic)`` that is missing and that nothing will
    create (``kafka.auto_create_topics`` is off)."""
    from eventpipe.kafka.admin import missing_topic_message

    if reach.settings.kafka.auto_create_topics:
        return []
    missing = await reach.missing_topics(t for _, t in wanted)
    if not missing:
        return []
    return [(path, missing_topic_message(t)) for path, t in wanted if t in missing]


PreflightCheck = Callable[[Reach], Awaitable[list[Problem]]]

# role -> the checks of the parts that role runs.  Feature packages add theirs
# (pipelines, webhook and kafka sources) when their module is imported.
PREFLIGHT_CHECKS: dict[str, list[PreflightCheck]] = {"ingest": [], "pipelines": [], "cdc": []}


def register_check(role: str, check: PreflightCheck) -> None:
    if check not in PREFLIGHT_CHECKS[role]:
        PREFLIGHT_CHECKS[role].append(check)


async def run_checks(reach: Reach, roles: Iterable[str]) -> list[Problem]:
    """Every problem every check of ``roles`` finds (none stops the others)."""
    from eventpipe.registry import load_builtin_plugins

    load_builtin_plugins()
    problems: list[Problem] = []
    for role in roles:
        for check in PREFLIGHT_CHECKS.get(role, []):
            problems.extend(await check(reach))
    return problems
