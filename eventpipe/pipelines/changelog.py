"""Table writes of a batch and their changelog records.

A pipeline's faust tables (the dedup table, aggregate and dedup-step state) are
changelog-backed: every write is also a record on the table's changelog topic,
in the partition of the source record being processed, and a worker that takes
over a partition rebuilds the table from it (faust's recovery).  The agent acks
a batch only after those records are acknowledged by the broker, so committed
offsets never run ahead of table state.

faust sends a changelog record per write through its producer buffer: a future
per record, a background task per send, sensors.  With ``at_least_once``
processing, :class:`BulkChangelogTable` writes the table's store directly and
queues the changelog record; :meth:`ChangelogWrites.flush` produces the batch's
records in a couple of producer batches per changelog partition (serialized
exactly as faust does, to the same topic and partition) and waits for the
broker.  With ``exactly_once``, the records must go through faust's
transactional producers, so faust's own table path is kept and only its futures
are awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson
from faust.types import TP

from eventpipe.kafka.batches import Header, send_batches

from .faust_adapter import changelog_producer, collect_changelog_sends, current_partition

_NO_HEADERS: list[Header] = []  # shared; only read


class ChangelogWrites:
    """The changelog records of the current batch's table writes."""

    def __init__(self, app: Any) -> None:
        self.app = app
        # (table, partition, key, value or None for a deletion)
        self.records: list[tuple[Any, int, Any, Any]] = []
        # faust's own sends (exactly_once), not yet acknowledged
        self.futures: list[asyncio.Future[Any]] = []

    def table(self, table: Any, *, bulk: bool) -> MutableMapping[str, Any]:
        """``table`` (a faust Table) as the pipeline writes it."""
        if bulk:
            return BulkChangelogTable(table, self)
        collect_changelog_sends(table, self.futures)
        return table

    def take(self) -> Pending:
        """The current batch's writes, to :meth:`send` (the next batch's writes
        start a new list: take them before it is processed)."""
        pending = Pending(self.records, self.futures)
        self.records, self.futures = [], []
        return pending

    async def send(self, pending: Pending) -> None:
        """Produce ``pending``'s records and wait until the broker has all of them."""
        records, futures = pending.records, pending.futures
        sent: list[tuple[Any, TP, int, Any]] = []  # (table, tp, records, future)
        if records:
            # Serialized as faust serializes table keys and values; one producer batch
            # per changelog partition (in order), not a send per record.
            by_tp: dict[TP, tuple[Any, list[tuple[Any, Any, list[Header]]]]] = {}
            for table, partition, key, value in records:
                topic = table.changelog_topic
                k, v = _serialized(table, topic, key, value)
                tp = TP(topic.get_topic_name(), partition)
                entry = by_tp.get(tp)
                if entry is None:
                    entry = by_tp[tp] = (table, [])
                entry[1].append((k, v, _NO_HEADERS))
            producer = changelog_producer(self.app)
            for tp, (table, rows) in by_tp.items():
                # The last record goes in a batch of its own: Tansu reports a partition's
                # end offset as the last batch's base offset + 1, and faust's recovery
                # reads a changelog only up to that end offset.
                for b in await send_batches(
                    producer, tp.topic, tp.partition, rows, split_last=True
                ):
                    sent.append((table, tp, b.end - b.start, b.ack))
        if futures:
            await asyncio.gather(*futures)
        if sent:
            results = await asyncio.gather(*(fut for *_, fut in sent))
            for (table, tp, n, _), meta in zip(sent, results, strict=True):
                table.data.set_persisted_offset(tp, meta.offset + n - 1)

    async def flush(self) -> None:
        """Produce the queued records and wait until the broker has all of them."""
        await self.send(self.take())


@dataclass(slots=True)
class Pending:
    """One batch's table writes: (table, partition, key, value or None for a
    deletion), and faust's own sends (``exactly_once``)."""

    records: list[tuple[Any, int, Any, Any]]
    futures: list[asyncio.Future[Any]]


def _serialized(table: Any, topic: Any, key: Any, value: Any) -> tuple[bytes, bytes | None]:
    """A changelog record's key and value as faust serializes them.  The dedup
    table's writes (a string key, ``[first_seen_ms, partition]``) are dumped by
    orjson directly: the same JSON faust's json codec reads back, at a tenth of
    the cost of its serializer registry (2.1 -> 0.2 us a write)."""
    if (
        type(key) is str
        and table.key_serializer == "json"
        and table.value_serializer == "json"
        and (value is None or (type(value) is list and all(type(x) is int for x in value)))
    ):
        return orjson.dumps(key), None if value is None else orjson.dumps(value)
    k, _ = topic.prepare_key(key, table.key_serializer)
    v = None if value is None else topic.prepare_value(value, table.value_serializer)[0]
    return k, v


class BulkChangelogTable(MutableMapping[str, Any]):
    """A faust table written through its store, its changelog records queued on
    :class:`ChangelogWrites` (see the module docs).  The partition is the current
    event's, as for faust's own table writes."""

    def __init__(self, table: Any, writes: ChangelogWrites) -> None:
        self.table = table
        self.data = table.data
        self.writes = writes

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __setitem__(self, key: str, value: Any) -> None:
        partition = current_partition()
        self.data[key] = value
        self.writes.records.append((self.table, partition, key, value))

    def __delitem__(self, key: str) -> None:
        partition = current_partition()
        del self.data[key]
        self.writes.records.append((self.table, partition, key, None))

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def items(self) -> Any:
        return self.data.items()
