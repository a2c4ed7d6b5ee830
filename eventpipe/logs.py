"""Logging for the processes eventpipe starts (the CLI, backfill workers)."""

from __future__ import annotations

import logging
import sys

from eventpipe.json_log import JsonFormatter


class _WorkerTag(logging.Filter):
    """Puts ``worker`` (its index under ``eventpipe run --workers``) on every record."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def setup_logging(level: str = "INFO", fmt: str = "text", *, worker: int | None = None) -> None:
    """Log to stderr: ``fmt`` text (one readable line) or json (one JSON object a
    line, with trace and span ids: :mod:`eventpipe.json_log`).  ``worker``: each
    line says which worker process wrote it (text ``[worker 1]``, JSON ``worker``)."""
    handler = logging.StreamHandler(sys.stderr)
    tag = "" if worker is None else "[worker %(worker)s] "
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s {tag}%(name)s: %(message)s")
        )
    if worker is not None:
        handler.addFilter(_WorkerTag(worker))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
