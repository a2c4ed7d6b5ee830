"""eventpipe.transforms: jq, filter, route, set, drop_fields and validate steps, and
the Chain that runs them (ARCHITECTURE.md section 1).

Each step module ends with its plugin value; :mod:`.catalog` lists them by the
name YAML uses (``STEPS``), and a chain is built from YAML items such as
``[{jq: '...'}, {filter: '...'}, {validate: {...}}]``.

* jq engines: ``jaq`` (jaq-rs, default) and ``jq`` (libjq, reference), one
  interface in :mod:`.jq_engine`; programs compile once, at config load.
* ``route`` marks the chosen topic in the extension ``routetopic``
  (:data:`ROUTE_EXTENSION`); sinks read it with :func:`routed_topic`.
* Errors for one event are :class:`TransformError` / :class:`SchemaValidationError`
  (permanent, with ``.step`` and ``.stage`` for the dead-letter headers).
"""

from .base import SchemaResolver, Step, StepContext, StepPlugin, TransformStep
from .catalog import STEPS
from .chain import BatchResult, Chain, ChainBatchError, build_steps
from .drop_fields import DropFieldsConfig, DropFieldsStep
from .errors import SchemaValidationError, StepError, TransformError, Violation
from .jq_engine import DEFAULT_ENGINE, JqCompileError, Program, compile_program
from .jq_step import JqConfig, JqStep
from .steps import (
    ROUTE_EXTENSION,
    FilterConfig,
    FilterStep,
    RouteConfig,
    RouteStep,
    SetConfig,
    SetStep,
    routed_topic,
)
from .validate import ValidateConfig, ValidateStep

__all__ = [
    "DEFAULT_ENGINE",
    "ROUTE_EXTENSION",
    "STEPS",
    "BatchResult",
    "Chain",
    "ChainBatchError",
    "DropFieldsConfig",
    "DropFieldsStep",
    "FilterConfig",
    "FilterStep",
    "JqCompileError",
    "JqConfig",
    "JqStep",
    "Program",
    "RouteConfig",
    "RouteStep",
    "SchemaResolver",
    "SchemaValidationError",
    "SetConfig",
    "SetStep",
    "Step",
    "StepContext",
    "StepError",
    "StepPlugin",
    "TransformError",
    "TransformStep",
    "ValidateConfig",
    "ValidateStep",
    "Violation",
    "build_steps",
    "compile_program",
    "routed_topic",
]
