"""Postgres change data capture: logical decoding with the built-in ``pgoutput`` plugin.

Modules: ``pgoutput`` (protocol decoder), ``types`` (values by type OID),
``events`` (Debezium-compatible envelope), ``slot`` (peek / advance / lag),
``checks`` (setup and start-up checks), ``snapshot`` (watermarked chunked
snapshots), ``heartbeat`` (heartbeats and the stall alarm), ``lock`` (one active
reader per slot), ``reader`` (the streaming loop) and ``source`` (registration as
the ``postgres_cdc`` source and the service component).
"""
