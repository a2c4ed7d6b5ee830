"""Where the console's status pages read from: a process's own board, or in a
worker of ``eventpipe run --workers N`` the supervisor's merged status (asked with
the admin token), falling back to the worker's own board with a note when the
supervisor answers an error or nothing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from eventpipe.console.status_source import StatusSource
from eventpipe.service.workers.slot import WorkerSlot
from eventpipe.settings import Settings
from eventpipe.status_board import StatusBoard
from tests.unit.test_status_board import Fake, _st

TOKEN = "supervisor-token-3b9"
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _settings() -> Settings:
    s = Settings()
    return s.model_copy(
        update={"service": s.service.model_copy(update={"admin_token": SecretStr(TOKEN)})}
    )


def _board() -> StatusBoard:
    board = StatusBoard([Fake("pipeline", "orders", _st("orders", lag={"t[1]": 2}))])
    board.sample()
    return board


def test_the_slot_carries_the_supervisors_url_to_the_worker() -> None:
    slot = WorkerSlot(1, 7, 42, "http://127.0.0.1:8081")
    assert WorkerSlot.from_env(slot.env()) == slot
    bare = WorkerSlot(0, 7, 42)
    assert "EVENTPIPE_WORKER_SUPERVISOR_URL" not in bare.env()
    assert WorkerSlot.from_env(bare.env()) == bare
    assert WorkerSlot.from_env({}) is None


async def test_a_single_process_shows_its_own_board() -> None:
    source = StatusSource(_board(), None, _settings())
    snap = await source.status()
    assert [(c["check"], "worker" in c) for c in snap["components"]] == [("pipeline:orders", False)]
    assert "note" not in snap
    hist = await source.history("pipeline:orders")
    assert list(hist["components"]) == ["pipeline:orders"]


@contextlib.asynccontextmanager
async def _source(status: Handler, history: Handler, index: int = 1) -> AsyncIterator[StatusSource]:
    """A worker's source, its supervisor answering with ``status`` and ``history``."""
    app = web.Application()
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/status/history", history)
    async with TestServer(app) as server:
        url = str(server.make_url("")).rstrip("/")
        yield StatusSource(_board(), WorkerSlot(index, 7, 42, url), _settings())


async def test_a_worker_shows_what_the_supervisor_answers_asked_with_the_token() -> None:
    asked: list[tuple[str, str, str | None]] = []
    merged = {
        "ok": True,
        "attention": [],
        "at": "2026-12-05T00:00:00+00:00",
        "workers": [{"worker": 0}, {"worker": 1}],
        "components": [
            {"check": "pipeline:orders", "worker": 0},
            {"check": "pipeline:orders", "worker": 1},
        ],
    }

    def answer(body: Any) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            auth = request.headers["Authorization"]
            asked.append((request.path, auth, request.query.get("component")))
            return web.json_response(body)

        return handler

    history = {"workers": {"0": {"components": {}}, "1": {"components": {}}}}
    async with _source(answer(merged), answer(history)) as source:
        assert await source.status("pipeline:orders") == merged
        hist = await source.history()
    assert set(hist["workers"]) == {"0", "1"} and hist["interval_s"] == 10.0
    assert "note" not in hist
    assert asked == [
        ("/v1/status", f"Bearer {TOKEN}", "pipeline:orders"),
        ("/v1/status/history", f"Bearer {TOKEN}", None),
    ]


async def test_an_error_or_a_non_object_from_the_supervisor_shows_the_workers_own_with_a_note() -> (
    None
):
    for answer, why in (
        (lambda: web.json_response({"detail": "no"}, status=503), "HTTP 503"),
        (lambda: web.json_response([1, 2]), "not a JSON object"),
        (lambda: web.Response(text="<html>"), "not JSON"),
    ):

        async def handler(request: web.Request, answer: Any = answer) -> web.Response:
            return answer()

        async with _source(handler, handler) as source:
            snap, hist = await source.status(), await source.history()
        assert [(c["worker"], c["check"]) for c in snap["components"]] == [(1, "pipeline:orders")]
        assert snap["note"].startswith("Only worker 1's components are shown"), snap["note"]
        assert why in snap["note"], (why, snap["note"])
        assert list(hist["workers"]) == ["1"]
        assert list(hist["workers"]["1"]["components"]) == ["pipeline:orders"]
        assert why in hist["note"]


async def test_a_supervisor_nobody_listens_for_shows_the_workers_own_with_a_note() -> None:
    server = TestServer(web.Application())
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    await server.close()  # nothing listens there now
    source = StatusSource(_board(), WorkerSlot(0, 7, 42, url), _settings())
    snap = await source.status()
    assert [c["worker"] for c in snap["components"]] == [0]
    assert url in snap["note"] and "ClientConnectorError" in snap["note"], snap["note"]
