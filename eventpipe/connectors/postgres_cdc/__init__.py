"""Postgres change data capture: logical decoding with the built-in ``pgoutput`` plugin.

Modules: ``pgoutput`` (protocol decoder), ``types`` (values by type OID),
``events`` (Debezium-compatible envelope), ``transactions`` (transaction
assembly: decoded messages -> a transaction's change events), ``slot`` (peek /
advance / lag), ``checks`` (setup and start-up checks), ``snapshot`` (chunk
reads and the DBLog reasoning), ``snapshot_window`` (the open chunk while the log
streams), ``initial_snapshot`` (``snapshot: initial_only``), ``publishing`` +
``emitting`` (records and dead letters out, then the slot advances), ``heartbeat``
(heartbeats and the stall alarm), ``lock`` (one active reader per slot),
``reader`` (the streaming loop) and ``source`` (registration as the
``postgres_cdc`` source and the service component).
"""
