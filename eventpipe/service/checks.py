"""Start-time checks of a whole config (:mod:`eventpipe.preflight`): each source
plugin's ``check`` on its entry, each pipeline's subjects and sinks, for the roles
a process runs.  ``eventpipe run`` runs them before anything starts and
``eventpipe check`` against the file's systems; every problem comes back at once,
with its path in the config."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from eventpipe.pipelines.component import check_pipeline_start
from eventpipe.pipelines.spec import check_pipeline
from eventpipe.plugin import Catalog
from eventpipe.preflight import Problem, Reach

from .catalog import CATALOG, SOURCE_ROLES
from .config import ServiceConfig


async def run_checks(
    config: ServiceConfig, reach: Reach, roles: Iterable[str], catalog: Catalog = CATALOG
) -> list[Problem]:
    """Every problem the checks of ``roles`` find (none stops the others)."""
    roles = set(roles)
    problems: list[Problem] = []
    for i, entry in enumerate(config.sources):
        plugin = catalog.sources.get(entry.type)
        if plugin is None or plugin.check is None or SOURCE_ROLES.get(entry.type) not in roles:
            continue
        with _warnings_under(reach, f"sources[{i}]"):
            found = await plugin.check(entry, reach)
        problems.extend((f"sources[{i}].{p}", m) for p, m in found)
    if "pipelines" in roles:
        for i, raw in enumerate(config.pipelines):
            where = f"pipelines[{i}]"
            spec, _ = check_pipeline(raw, where, catalog.sinks)  # load problems: at load
            if spec is None:
                continue
            with _warnings_under(reach, where):
                found = await check_pipeline_start(spec, reach, catalog.sinks)
            problems.extend((f"{where}.{p}", m) for p, m in found)
    return problems


@contextlib.contextmanager
def _warnings_under(reach: Reach, where: str) -> Iterator[None]:
    """Warnings a check adds (paths relative to its entry) get the entry's path."""
    before = len(reach.warnings)
    try:
        yield
    finally:
        reach.warnings[before:] = [(f"{where}.{p}", m) for p, m in reach.warnings[before:]]
