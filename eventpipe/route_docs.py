"""The HTTP routes a user can call, declared next to the code that installs them.

Each installer (the publish API, the schema registry, the DLQ admin API, the
console, a source that serves requests) keeps a tuple of :class:`RouteDoc` beside
its ``add_route`` calls: what the route does and what it asks of the caller.  The
roof gathers them (``eventpipe.service.app.documented_routes``) for
docs/reference.md, and tests/unit/test_reference.py checks them against the
routes the service's real application serves, so a route added without its line
fails a test.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

NO_AUTH = "none"
ADMIN_TOKEN = "admin token: `Authorization: Bearer <service.admin_token>`"


@dataclass(frozen=True)
class RouteDoc:
    """One route: ``method`` and ``path`` as served (``{name}`` for a path
    parameter), ``what`` it does in one line, ``auth`` what the caller needs."""

    method: str
    path: str
    what: str
    auth: str = NO_AUTH


def under(prefix: str, docs: Iterable[RouteDoc]) -> tuple[RouteDoc, ...]:
    """``docs`` of a sub-application mounted at ``prefix`` (``/schema-registry``)."""
    return tuple(replace(d, path=prefix.rstrip("/") + d.path) for d in docs)


__all__ = ["ADMIN_TOKEN", "NO_AUTH", "RouteDoc", "under"]
