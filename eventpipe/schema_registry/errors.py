"""Registry errors, each carrying Confluent's HTTP status and ``error_code``.

The server turns them into ``{"error_code": N, "message": "..."}``; the client
raises :class:`RegistryClientError` with the same fields for any registry
(ours, Confluent's, Karapace).  All are permanent except 5xx answers and an
unreachable registry.
"""

from __future__ import annotations

from eventpipe.errors import HttpStatusError, PermanentError, RetriableError


class RegistryError(PermanentError):
    """An error the registry answers with ``status`` and Confluent's ``error_code``."""

    status = 500
    error_code = 50001

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SubjectNotFound(RegistryError):
    status, error_code = 404, 40401

    def __init__(self, subject: str) -> None:
        super().__init__(f"Subject '{subject}' not found.")
        self.subject = subject


class VersionNotFound(RegistryError):
    status, error_code = 404, 40402

    def __init__(self, subject: str, version: int | str) -> None:
        super().__init__(f"Version {version} not found for subject '{subject}'.")


class SchemaNotFound(RegistryError):
    status, error_code = 404, 40403


class SubjectSoftDeleted(RegistryError):
    status, error_code = 404, 40404

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
        )


class SubjectNotSoftDeleted(RegistryError):
    status, error_code = 404, 40405

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' was not deleted first before being permanently deleted"
        )


class VersionSoftDeleted(RegistryError):
    status, error_code = 404, 40406

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Subject '{subject}' Version {version} was soft deleted. Set permanent=true to "
            "delete permanently"
        )


class VersionNotSoftDeleted(RegistryError):
    status, error_code = 404, 40407

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Subject '{subject}' Version {version} was not deleted first before being "
            "permanently deleted"
        )


class SubjectConfigNotFound(RegistryError):
    status, error_code = 404, 40408

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' does not have subject-level compatibility configured"
        )


class SubjectModeNotFound(RegistryError):
    status, error_code = 404, 40409

    def __init__(self, subject: str) -> None:
        super().__init__(f"Subject '{subject}' does not have subject-level mode configured")


class IncompatibleSchema(RegistryError):
    status, error_code = 409, 409

    def __init__(self, subject: str, messages: list[str]) -> None:
        super().__init__(
            f"Schema being registered is incompatible with an earlier schema for subject "
            f'"{subject}", details: [{", ".join(messages)}]'
        )
        self.messages = messages


class InvalidSchema(RegistryError):
    """The schema text is not a valid schema of its type (or a reference is broken)."""

    status, error_code = 422, 42201

    def __init__(self, message: str) -> None:
        super().__init__(f"Invalid schema: {message}")


class InvalidVersion(RegistryError):
    status, error_code = 422, 42202

    def __init__(self, version: object) -> None:
        super().__init__(
            f"The specified version '{version}' is not a valid version id. Allowed values are "
            'between [1, 2^31-1] and the string "latest"'
        )


class InvalidCompatibilityLevel(RegistryError):
    status, error_code = 422, 42203

    def __init__(self, level: object) -> None:
        super().__init__(
            f"Invalid compatibility level {level!r}. Valid values are none, backward, forward, "
            "full, backward_transitive, forward_transitive, and full_transitive"
        )


class InvalidMode(RegistryError):
    status, error_code = 422, 42204

    def __init__(self, mode: object) -> None:
        super().__init__(f"Invalid mode {mode!r}. Valid values are READWRITE, READONLY and IMPORT")


class OperationNotPermitted(RegistryError):
    status, error_code = 422, 42205


class ReferenceExists(RegistryError):
    status, error_code = 422, 42206


class BadRequest(RegistryError):
    """The request body is not JSON, or a field has the wrong shape."""

    status, error_code = 400, 400


class StoreError(RegistryError):
    """The backing store failed (Confluent's 50001); retrying may help."""

    status, error_code = 500, 50001
    retriable = True


# --------------------------------------------------------------------- client side


class RegistryClientError(HttpStatusError):
    """A registry answered with an error: ``status``, ``error_code`` and ``message`` as
    it sent them.  5xx / 429 are retriable, other 4xx permanent (by status)."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(status, f"{message} (error_code {error_code})")
        self.error_code = error_code
        self.message = message


class RegistryUnavailableError(RetriableError):
    """The registry could not be reached (connection refused, timeout)."""
