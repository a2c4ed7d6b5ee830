"""Where the console's status pages read the status from.

A single process shows its own :class:`~eventpipe.status_board.StatusBoard`.  A
worker of ``eventpipe run --workers N`` (its :class:`~eventpipe.service.workers.slot.WorkerSlot`
names the supervisor's ops URL) asks the supervisor for the merged ``/v1/status``
and ``/v1/status/history`` of every worker (a local HTTP call with a short
timeout, sent the admin token as the supervisor asks), so the pages show every
worker's components whichever worker took the connection.  When the supervisor
does not answer, the worker shows its own board, each component marked with its
worker, and a note saying that only this worker's components are shown and why.

What it answers keeps the shapes the pages know: a snapshot (``ok``,
``attention``, ``at``, ``components``; under workers each component has its
``worker`` and the snapshot the ``workers`` list) and a history (``interval_s``,
``points`` and, under workers, ``workers``: index -> that worker's history;
else ``components``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from eventpipe.service.workers.slot import WorkerSlot
from eventpipe.settings import Settings
from eventpipe.status_board import StatusBoard

log = logging.getLogger(__name__)
ASK_TIMEOUT_S = 2.0
Doc = dict[str, Any]


class NoAnswer(Exception):
    """The supervisor did not answer usefully (the message says how)."""


@dataclass
class StatusSource:
    board: StatusBoard  # this process's components
    slot: WorkerSlot | None  # set in a worker of `eventpipe run --workers N`
    settings: Settings
    _failing: bool = False  # the last ask failed (logged once per run of failures)

    @property
    def supervisor_url(self) -> str | None:
        return None if self.slot is None else self.slot.supervisor_url

    async def status(self, check: str | None = None) -> Doc:
        """The snapshot (of component ``check`` only, when given), secrets not yet
        cut out; a ``note`` when it is this worker's alone."""
        if self.slot is None or self.supervisor_url is None:
            return self.board.snapshot(self._only(check))
        try:
            return await self._ask("/v1/status", check)
        except NoAnswer as why:
            return self._own_status(self.slot, check, str(why))

    async def history(self, check: str | None = None) -> Doc:
        """The history (of component ``check`` only, when given)."""
        names = None if check is None else [check]
        if self.slot is None or self.supervisor_url is None:
            return self.board.history(names)
        frame = {"interval_s": self.board.interval_s, "points": self.board.points}
        try:
            got = await self._ask("/v1/status/history", check)
        except NoAnswer as why:
            own = {str(self.slot.index): self.board.history(names)}
            return {**frame, "workers": own, "note": self._note(self.slot, str(why))}
        return {**frame, "workers": got.get("workers") or {}}

    # ------------------------------------------------------------------
    def _only(self, check: str | None) -> list[Any] | None:
        if check is None:
            return None
        comp = self.board.find(check)
        return [] if comp is None else [comp]

    def _own_status(self, slot: WorkerSlot, check: str | None, why: str) -> Doc:
        snap = self.board.snapshot(self._only(check))
        for entry in snap["components"]:
            entry["worker"] = slot.index
        snap["attention"] = [f"worker {slot.index}: {a}" for a in snap["attention"]]
        snap["note"] = self._note(slot, why)
        return snap

    def _note(self, slot: WorkerSlot, why: str) -> str:
        return (
            f"Only worker {slot.index}'s components are shown (the worker that answered "
            f"this page): the supervisor's merged status at {self.supervisor_url} did not "
            f"answer ({why})."
        )

    async def _ask(self, path: str, check: str | None) -> Doc:
        try:
            doc = await self._get(path, check)
        except NoAnswer as why:
            if not self._failing:  # once per run of failures
                log.warning(
                    "the console shows this worker's components only: the supervisor's %s "
                    "at %s did not answer (%s)",
                    path,
                    self.supervisor_url,
                    why,
                )
                self._failing = True
            raise
        if self._failing:
            log.info("the supervisor answers %s again: the console shows every worker", path)
            self._failing = False
        return doc

    async def _get(self, path: str, check: str | None) -> Doc:
        token = self.settings.service.admin_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        params = {} if check is None else {"component": check}
        timeout = aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(f"{self.supervisor_url}{path}", params=params, headers=headers) as r,
            ):
                status, body = r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NoAnswer(
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ) from exc
        if status != 200:
            raise NoAnswer(f"HTTP {status}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise NoAnswer("its answer is not JSON") from exc
        if not isinstance(doc, dict):
            raise NoAnswer("its answer is not a JSON object")
        return doc
