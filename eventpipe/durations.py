"""Durations in config: ``200ms``, ``30s``, ``5m``, ``24h``, ``7d`` or a number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from ``"200ms"`` / ``"24h"`` / a number; ValueError names the format."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 200ms, 30s, 5m, 24h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(
        f"{value!r} is not a duration; use a number of seconds or e.g. 200ms, 30s, 5m, 24h, 7d"
    )


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A pydantic field type: seconds as a float, accepting ``"30s"`` style strings."""
