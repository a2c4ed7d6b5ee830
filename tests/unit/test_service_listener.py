"""The service takes its HTTP port before it opens any client connection: an
outgoing connection's ephemeral port can otherwise be the very port it needs."""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest

from eventpipe.embedded.process import free_port
from eventpipe.service import runner
from eventpipe.service.runner import Service
from eventpipe.settings import load_settings


class _Stop(Exception):
    pass


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
            return True
    return False


async def test_http_port_is_taken_before_any_client_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    settings = load_settings(environ={}, overrides={"service": {"port": port}})
    seen: dict[str, bool] = {}

    async def open_(settings: Any, **kw: Any) -> Any:
        seen["taken_when_connecting"] = _port_taken(port)
        raise _Stop  # no broker or database here: stop the start

    monkeypatch.setattr(runner, "open_context", open_)
    with pytest.raises(_Stop):
        await Service(settings).start()
    assert seen["taken_when_connecting"]
    assert not _port_taken(port), "a failed start gives the port back"
