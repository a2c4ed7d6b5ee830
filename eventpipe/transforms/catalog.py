"""The built-in steps, by the name a pipeline's ``steps:`` list uses.

The transforms package owns its steps: a chain builds from this catalog unless
it is given another (a test's own step, a future plugin package's)."""

from __future__ import annotations

from collections.abc import Mapping

from eventpipe.plugin import by_type

from . import drop_fields, jq_step, steps, validate
from .base import StepPlugin

STEPS: Mapping[str, StepPlugin] = by_type(
    [
        jq_step.PLUGIN,
        steps.FILTER_PLUGIN,
        steps.ROUTE_PLUGIN,
        steps.SET_PLUGIN,
        drop_fields.PLUGIN,
        validate.PLUGIN,
    ]
)

__all__ = ["STEPS"]
