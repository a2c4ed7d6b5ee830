from __future__ import annotations

from collections.abc import Sequence

import pytest

from eventpipe.base import PluginConfig, Sink
from eventpipe.envelope import CloudEvent
from eventpipe.registry import Registry


class _Cfg(PluginConfig):
    path: str


def test_register_and_get_by_name() -> None:
    reg: Registry[Sink] = Registry("sink")

    @reg.register("memory-test")
    class S(Sink):
        Config = _Cfg

        async def write_batch(self, events: Sequence[CloudEvent]) -> None: ...

    assert reg.get("memory-test") is S
    assert S.type_name == "memory-test"
    assert "memory-test" in reg
    with pytest.raises(KeyError, match="unknown sink 'nope'; known: memory-test"):
        reg.get("nope")
    with pytest.raises(ValueError, match="already registered"):

        @reg.register("memory-test")
        class Other(Sink):
            async def write_batch(self, events: Sequence[CloudEvent]) -> None: ...


async def test_unclosed_sink_warns() -> None:
    class S(Sink):
        async def write_batch(self, events: Sequence[CloudEvent]) -> None: ...

    s = S(_Cfg(path="x"), name="leaky")
    await s.start()
    with pytest.warns(ResourceWarning, match="leaky"):
        s.__del__()
    await s.close()


def test_plugin_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        _Cfg.model_validate({"path": "x", "pth": "y"})
