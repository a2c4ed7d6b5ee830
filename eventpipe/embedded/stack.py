"""The embedded stack: PostgreSQL + broker, each skipped when an external one is configured."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from eventpipe.embedded.broker import EmbeddedBroker
from eventpipe.embedded.postgres import EmbeddedPostgres

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

    def start(self) -> EmbeddedStack:
        try:
            external_db = self.environ.get(DATABASE_ENV)
            if external_db:
                self.database_url = external_db
            else:
                self.postgres = EmbeddedPostgres(self.data_dir, self.postgres_port, fast=self.fast)
                self.postgres.start()
                self.database_url = self.postgres.url
            external_kafka = self.environ.get(KAFKA_ENV)
            if external_kafka:
                self.bootstrap = external_kafka
            else:
                self.broker = EmbeddedBroker(self.data_dir, self.kafka_port)
                self.broker.start()
                self.bootstrap = self.broker.bootstrap
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Idempotent; broker first (it holds no state we keep), then the database."""
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
