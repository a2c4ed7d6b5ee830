"""What every console page shares: the service's context, the signing keys, the
redactor, the status of the components (this process's, or every worker's under
``eventpipe run --workers``), and the visitor's login (set on each request by
:mod:`.access`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from eventpipe.console.redact import Redactor
from eventpipe.console.session import Keys, Session
from eventpipe.console.status_source import StatusSource
from eventpipe.schema_registry.registry import SchemaRegistry
from eventpipe.settings import ConsoleSettings, Settings
from eventpipe.status_board import StatusBoard

if TYPE_CHECKING:
    from eventpipe.context import Context

# set on each request by access.guard
SESSION = web.RequestKey[Session | None]("eventpipe_console_session")
ANON = web.RequestKey[str]("eventpipe_console_anon")  # the anonymous visitor's id
NEW_ANON = web.RequestKey[bool]("eventpipe_console_new_anon")  # that id is new: set its cookie


@dataclass
class Console:
    ctx: Context
    keys: Keys
    redactor: Redactor
    registry: SchemaRegistry
    board: StatusBoard  # the components of the process serving the console
    status: StatusSource  # what the status pages show: the board, or every worker's

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def config(self) -> ConsoleSettings:
        return self.ctx.settings.service.console

    @property
    def pool(self) -> AsyncConnectionPool:
        pool = self.ctx.pool
        assert pool is not None, "the service has no database pool"
        return pool


CONSOLE = web.AppKey("eventpipe_console", Console)


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION)


def csrf_binding(request: web.Request) -> str | None:
    """What the visitor's CSRF token is bound to: the session, else the anonymous id."""
    s = session_of(request)
    if s is not None:
        return s.sid
    return request.get(ANON)
