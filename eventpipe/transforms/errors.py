"""Errors a transform step raises for one event.

Both are permanent (ARCHITECTURE.md section 7): the event goes to the dead-letter
topic at once.  ``stage`` is the value for the ``eventpipe.dlq.stage`` header and
``step`` (``steps[1].filter`` inside a chain) the one for ``eventpipe.dlq.step``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from eventpipe.errors import PermanentError


class StepError(PermanentError):
    """Base of the errors a transform step raises for one event."""

    stage: ClassVar[str] = "transform"

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.detail = message
        self.step = step

    def __str__(self) -> str:
        # ``step`` is filled in by the step (or chain) that let the error out.
        return f"{self.step}: {self.detail}" if self.step else self.detail


class TransformError(StepError):
    """A jq program failed at run time, or produced something that is not an event."""

    stage: ClassVar[str] = "transform"


@dataclass(frozen=True, slots=True)
class Violation:
    """One schema rule an event broke: ``path`` is a JSONPath into the data
    (``$.items[0].qty``), ``rule`` the keyword or Avro type that failed."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}: {self.message}"


class SchemaValidationError(StepError):
    """The event's data does not match its schema; ``violations`` lists why."""

    stage: ClassVar[str] = "validate"

    def __init__(self, violations: list[Violation], *, step: str | None = None) -> None:
        self.violations = violations
        head = f"data does not match the schema ({len(violations)} violation(s))"
        super().__init__(f"{head}: " + "; ".join(str(v) for v in violations), step=step)
