"""Name -> class registries, so YAML can name sources, sinks and steps.

Each connector / step module registers itself under the name a config file
uses (``@sinks.register("postgres")``).  ``load_builtin_plugins`` imports the
modules that hold them, so a registry is complete before a config is checked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            existing = self._items.get(name)
            if existing is not None and existing is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered by {existing!r}")
            self._items[name] = cls
            cls.type_name = name  # type: ignore[attr-defined]
            return cls

        return deco

    def get(self, name: str) -> type[T]:
        load_builtin_plugins()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        load_builtin_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        load_builtin_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


# Modules that register built-in plugins.  Later issues append to this list.
BUILTIN_PLUGIN_MODULES: list[str] = [
    "eventpipe.transforms.jq_step",
    "eventpipe.transforms.steps",
    "eventpipe.transforms.drop_fields",
    "eventpipe.transforms.validate",
    "eventpipe.connectors.sinks.postgres",
    "eventpipe.connectors.sinks.http",
    "eventpipe.connectors.sinks.topic",
    "eventpipe.connectors.sinks.outbox",
    "eventpipe.pipelines.spec",
    "eventpipe.pipelines.component",
    "eventpipe.connectors.webhook.source",
    "eventpipe.connectors.kafka_source",
    "eventpipe.connectors.postgres_cdc.source",
    "eventpipe.connectors.outbox.relay",
]
_loaded = False


def load_builtin_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN_PLUGIN_MODULES:
        importlib.import_module(mod)
