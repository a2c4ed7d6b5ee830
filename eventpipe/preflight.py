"""Start-time checks of what a config names: tables, topics, schema subjects.

A config can be valid on paper and still fail every record it meets: a Postgres
sink whose table is missing, a source whose topic does not exist, a schema
subject nobody registered.  Each of those would fill a dead-letter topic instead
of stopping the service, and the first one found used to hide the next until
the next start.  So before any component starts, the service runs every check
of the roles it runs and raises one :class:`~eventpipe.errors.ConfigError`
listing every problem with its path (Debezium's ``validate(ALL_FIELDS)``, held
against the live systems); ``eventpipe check`` runs the same checks on a file.

Each plugin names its check (``Plugin.check``); the service's composition root
(``eventpipe.service.checks``) runs those of the parts a role runs.  A check gets
a :class:`Reach`: the topic admin and the database pool, each None when that
system is not being checked (``--offline``, or it did not answer).  A check that
cannot look says so with :meth:`Reach.skip` rather than guessing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from eventpipe.kafka.admin import TopicAdmin
    from eventpipe.settings import Settings

log = logging.getLogger(__name__)
Problem = tuple[str, str]


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
    warnings: list[Problem] = field(default_factory=list)

    def skip(self, what: str, why: str) -> None:
        note = f"{what} skipped: {why}"
        if note not in self.skipped:
            self.skipped.append(note)

    def warn(self, path: str, message: str) -> None:
        """Worth telling, but no reason to refuse the config (a pipeline's subject
        that is not registered yet: the pipeline waits for it)."""
        self.warnings.append((path, message))

    async def missing_topics(self, topics: Iterable[str]) -> list[str] | None:
        """The topics of ``topics`` the broker does not have; None when not checked."""
        if self.admin is None:
            return None
        existing = await self.admin.list_topics()
        return [t for t in topics if t not in existing]


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
