"""Logging for the processes eventpipe starts (the CLI, backfill workers)."""

from __future__ import annotations

import logging
import sys

from eventpipe.json_log import JsonFormatter


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr: ``fmt`` text (one readable line) or json (one JSON object a
    line, with trace and span ids: :mod:`eventpipe.json_log`)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
