"""The parts of the service one process runs: ``eventpipe run --role``."""

from __future__ import annotations

from typing import Literal

Role = Literal["ingest", "pipelines", "cdc", "all"]
ROLES: tuple[Role, ...] = ("ingest", "pipelines", "cdc", "all")

__all__ = ["ROLES", "Role"]
