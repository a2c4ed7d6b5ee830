"""What producers and pipelines hand the trace index, and how ids are kept in it.

The producers (:class:`~eventpipe.publisher.Publisher`, the webhook
``BatchProducer``) and the pipelines' ``BatchProcessor`` hold an optional
:class:`TraceHook`.  It is called once per acknowledged record batch and once per
processed pipeline batch, never per record, and must not block or fail: the
service's hook (:class:`~eventpipe.trace.writer.TraceWriter`) only queues what it
is given.  The index is the event trace's (``eventpipe trace``), not OpenTelemetry's.

Ids are kept as fingerprints: the CRC-32 of the UTF-8 id, 4 bytes little-endian,
one per record in record order.  CRC-32 is stable across processes and versions
and costs a tenth of a cryptographic hash; it is no defence against ids chosen to
collide, and needs none: a collision costs one Kafka fetch when the record is
checked, never a wrong answer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any, Protocol
from zlib import crc32

FP_SIZE = 4

# What a pipeline did with a record (one letter per record in trace_read.outcomes).
DELIVERED = "d"  # its outputs went to every sink of the pipeline
FILTERED = "f"  # no output: a filter (or a step) dropped it
DUPLICATE = "u"  # its (source, id) was processed before (state.dedup_window)
DEAD = "x"  # dead-lettered; notes say at which stage and step
OUTCOMES = {
    DELIVERED: "delivered",
    FILTERED: "filtered",
    DUPLICATE: "duplicate",
    DEAD: "dead-lettered",
}


class TraceHook(Protocol):
    def produced(
        self,
        topic: str,
        partition: int,
        base_offset: int,
        ids: Sequence[str],
        members: Sequence[int] | None,
        via: str,
    ) -> None:
        """The broker acknowledged a record batch at ``base_offset``: its records'
        ids are ``ids`` (or ``[ids[i] for i in members]``), in order."""

    def read(self, pipeline: str, records: Sequence[Any], sinks: Sequence[str]) -> None:
        """A pipeline processed ``records`` (pipelines.batch.Record) to the end."""


def fingerprint(event_id: str) -> bytes:
    return crc32(event_id.encode("utf-8", "surrogatepass")).to_bytes(FP_SIZE, "little")


def fingerprints(ids: Iterable[str]) -> bytes:
    values = [crc32(i.encode("utf-8", "surrogatepass")) for i in ids]
    return struct.pack(f"<{len(values)}I", *values)


def positions(fps: bytes, fp: bytes) -> list[int]:
    """The record indexes whose fingerprint is ``fp`` (matches on a 4-byte boundary)."""
    out = []
    at = fps.find(fp)
    while at >= 0:
        if at % FP_SIZE == 0:
            out.append(at // FP_SIZE)
        at = fps.find(fp, at + 1)
    return out
