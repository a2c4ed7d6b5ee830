"""``eventpipe run --workers N``: N service processes under one supervisor.

The supervisor (:mod:`.supervisor`) is a small asyncio process that opens no
broker or database connection and serves no API.  It starts N ``eventpipe run``
processes with the same config and role, each told its slot (:mod:`.slot`): its
index, and a listening socket on 127.0.0.1 (its private ops port) that the
supervisor made and keeps across the worker's restarts.  Each worker listens on
``service.port`` with ``SO_REUSEPORT``, so the kernel spreads connections among
them; pipelines share their partitions through their consumer groups; CDC and
outbox relays take their advisory lock, the others wait as standby.

The supervisor restarts a worker that exits with exponential backoff
(:class:`.supervisor.RestartBackoff`), forwards SIGTERM and waits for every worker
to drain, and serves ``/healthz``, ``/readyz``, ``/metrics`` and ``/v1/status``
of all workers together on ``service.ops_port`` (:mod:`.ops_api`), each merged
from what the workers answer on their private ports (:mod:`.merge`).
"""
