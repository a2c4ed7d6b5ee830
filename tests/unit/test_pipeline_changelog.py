"""Table writes go to the store at once and to the changelog topic in one producer
batch per partition, in order, serialized as faust serializes them; the batch is
done only when the broker acknowledged them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from eventpipe.pipelines.changelog import BulkChangelogTable, ChangelogWrites
from eventpipe.pipelines.faust_adapter import current_event


class Event:
    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition, topic="src")


@contextlib.contextmanager
def reading(partition: int) -> Iterator[None]:
    with current_event(Event(partition)):
        yield


class Store(dict[str, Any]):
    persisted: dict[Any, int]

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset


class Batch:
    """aiokafka's BatchBuilder interface: append until full, close before sending."""

    def __init__(self, room: int) -> None:
        self.room, self.records, self.closed = room, [], False

    def append(self, *, key: Any, value: Any, timestamp: Any, headers: list[Any]) -> Any:
        assert isinstance(headers, list)  # the C builder refuses anything else
        if self.closed or len(self.records) == self.room:
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class Producer:
    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[tuple[str, int, list[Any]]] = []
        self.offsets: dict[int, int] = {}

    def create_batch(self) -> Batch:
        return Batch(self.room)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> Any:
        # An open batch would wait out linger_ms in aiokafka's accumulator.
        assert batch.closed, "a complete batch is closed before it is handed over"
        self.sent.append((topic, partition, batch.records))
        base = self.offsets.get(partition, 0)
        self.offsets[partition] = base + len(batch.records)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(SimpleNamespace(offset=base))
        return fut


def faust_table() -> Any:
    topic = SimpleNamespace(
        get_topic_name=lambda: "p-dedup-changelog",
        prepare_key=lambda k, ser: (f"K:{k}".encode(), None),
        prepare_value=lambda v, ser: (f"V:{v}".encode(), None),
    )
    store = Store()
    store.persisted = {}
    # Not "json": those writes of the dedup table's shape skip the topic's prepare_*
    # (test_dedup_writes_are_serialized_as_faust_reads_them).
    return SimpleNamespace(
        data=store, changelog_topic=topic, key_serializer="test", value_serializer="test"
    )


async def test_writes_are_produced_per_partition_in_order() -> None:
    producer = Producer(room=1)
    app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
    writes = ChangelogWrites(app)
    raw = faust_table()
    table = writes.table(raw, bulk=True)
    assert isinstance(table, BulkChangelogTable)
    with reading(1):
        table["a"] = 1
        table["b"] = 2
        table["a"] = 3
    with reading(0):
        table["c"] = 4
        del table["b"]  # a deletion is a tombstone in the partition being read
    assert dict(raw.data) == {"a": 3, "c": 4} and table.get("a") == 3 and "b" not in table
    assert producer.sent == []  # nothing leaves before the batch is done
    await writes.flush()
    # the last record of a partition goes alone (Tansu's end offset is the last
    # batch's base offset + 1); batches that are full are sent and a new one started
    assert producer.sent == [
        ("p-dedup-changelog", 1, [(b"K:a", b"V:1")]),
        ("p-dedup-changelog", 1, [(b"K:b", b"V:2")]),
        ("p-dedup-changelog", 1, [(b"K:a", b"V:3")]),
        ("p-dedup-changelog", 0, [(b"K:c", b"V:4")]),
        ("p-dedup-changelog", 0, [(b"K:b", None)]),
    ]
    assert {tp.partition: o for tp, o in raw.data.persisted.items()} == {1: 2, 0: 1}
    await writes.flush()
    assert len(producer.sent) == 5  # flushed records are not sent again


async def test_a_partition_s_records_fill_one_batch_then_the_last_goes_alone() -> None:
    producer = Producer(room=100)
    app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
    writes = ChangelogWrites(app)
    table = writes.table(faust_table(), bulk=True)
    with reading(2):
        for i in range(5):
            table[f"k{i}"] = i
    await writes.flush()
    assert [len(r) for _, _, r in producer.sent] == [4, 1]


def test_a_write_outside_a_record_is_refused() -> None:
    writes = ChangelogWrites(SimpleNamespace())
    table = writes.table(faust_table(), bulk=True)
    with pytest.raises(TypeError):
        table["x"] = 1


def test_dedup_writes_are_serialized_as_faust_reads_them() -> None:
    """The dedup table's writes skip faust's serializer registry (orjson); faust's
    recovery must read them back as the same key and value.  Other shapes go
    through faust's own serializers, byte for byte."""
    import tempfile
    from datetime import UTC, datetime

    import faust

    from eventpipe.pipelines.changelog import _serialized

    app = faust.App(
        "changelog-serialized",
        broker="kafka://localhost:1",
        store="memory://",
        datadir=tempfile.mkdtemp(),
    )
    table = app.Table("dedup", partitions=1, default=None)
    topic = table.changelog_topic

    def faust_bytes(key: Any, value: Any) -> tuple[bytes, bytes | None]:
        k = topic.prepare_key(key, table.key_serializer)[0]
        v = None if value is None else topic.prepare_value(value, table.value_serializer)[0]
        return k, v

    for key, value in [
        ("/shop\x00evt-1", [1733234234123, 2]),
        ("/münchen\x00évt-\u2603", [0, 0]),
        ("/shop\x00evt-2", None),  # a deletion
    ]:
        k, v = _serialized(table, topic, key, value)
        assert app.serializers.loads_key(str, k, serializer="json") == key
        want = faust_bytes(key, value)
        assert (v is None) == (want[1] is None)
        if v is not None:
            assert app.serializers.loads_value(None, v, serializer="json") == value
    for key, value in [
        ("c1 1767268800", {"value": 1.5, "count": 2}),
        ("c2", [1, 2.5]),
        ("c3", {"at": datetime(2026, 1, 1, tzinfo=UTC)}),
        (7, [1, 2]),
    ]:
        assert _serialized(table, topic, key, value) == faust_bytes(key, value)
