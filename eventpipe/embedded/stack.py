"""The embedded stack: PostgreSQL + broker, each skipped when an external one is configured.

:meth:`EmbeddedStack.claim` runs before anything starts: it takes the data
directory (one ``eventpipe dev`` per directory, see ``lock.py``), refuses one a
PostgreSQL still runs on, and finds every port that is already taken, so a
second instance or a busy port is reported without disturbing anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from eventpipe.embedded.broker import EmbeddedBroker
from eventpipe.embedded.lock import DataDirLock
from eventpipe.embedded.postgres import EmbeddedPostgres
from eventpipe.embedded.process import PortInUseError

KAFKA_ENV = "EVENTPIPE_KAFKA_BOOTSTRAP"
DATABASE_ENV = "EVENTPIPE_DATABASE_URL"


@dataclass
class EmbeddedStack:
    data_dir: Path
    postgres_port: int = 5432
    kafka_port: int = 9092
    fast: bool = False
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    bootstrap: str = ""
    database_url: str = ""
    lock: DataDirLock | None = None

    def claim(self) -> list[PortInUseError]:
        """Take the data directory (raises DataDirInUseError naming its holder) and
        return every port of the embedded parts that is taken.  Starts nothing."""
        if self.lock is not None:
            return []
        external_db = self.environ.get(DATABASE_ENV)
        external_kafka = self.environ.get(KAFKA_ENV)
        if external_db:
            self.database_url = external_db
        else:
            self.postgres = EmbeddedPostgres(self.data_dir, self.postgres_port, fast=self.fast)
        if external_kafka:
            self.bootstrap = external_kafka
        else:
            self.broker = EmbeddedBroker(self.data_dir, self.kafka_port)
        if self.postgres is None and self.broker is None:
            return []  # nothing of ours lives in the data directory
        lock = DataDirLock(self.data_dir)
        lock.acquire()
        taken: list[PortInUseError] = []
        try:
            if self.postgres is not None:
                self.postgres.check_not_running()
            for part in (self.postgres, self.broker):
                if part is not None:
                    try:
                        part.check_port()
                    except PortInUseError as exc:
                        taken.append(exc)
        except BaseException:
            lock.release()
            raise
        self.lock = lock
        return taken

    def start(self) -> EmbeddedStack:
        try:
            taken = self.claim()
            if taken:
                raise taken[0]
            if self.postgres is not None:
                self.postgres.start()
                self.database_url = self.postgres.url
            if self.broker is not None:
                self.broker.start()
                self.bootstrap = self.broker.bootstrap
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Idempotent; broker first (it holds no state we keep), then the database,
        then the data directory is free for the next one."""
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
