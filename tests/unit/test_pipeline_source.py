"""The source reader's contiguity guard: a partition's records reach the batch
processor with no hole, so an exactly-once sink's high-water mark never passes a
record it did not write (the two-worker rebalance loss)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from eventpipe.pipelines.partition_reader import Positions, SourceBatch, SourceReader

T = TP("orders", 0)


@dataclass
class Rec:
    offset: int


class MarkSink:
    """What the postgres sink does with offsets: write, then keep the high-water
    mark; a record at or below the mark is skipped."""

    def __init__(self) -> None:
        self.mark = -1
        self.written: list[int] = []

    def deliver(self, records: list[Rec]) -> None:
        for r in records:
            if r.offset > self.mark:
                self.written.append(r.offset)
        if records:
            self.mark = max(self.mark, records[-1].offset)


def run(
    log: list[int], start: int, drop_once: set[int], batch: int = 4
) -> tuple[MarkSink, Positions]:
    """Drive Positions like SourceReader does, over a fetcher whose deliveries lose
    each offset in ``drop_once`` the first time it is at the edge of a delivery
    (what faust's cleared channel queue did between two batches)."""
    positions = Positions()
    positions.reset({T: start})
    sink = MarkSink()
    position = start  # the consumer's fetch position
    for _ in range(100):
        run_ = [o for o in log if o >= position][:batch]
        if not run_:
            break
        position = run_[-1] + 1  # the consumer moved past everything it returned
        lost = drop_once & {run_[0], run_[-1]}
        delivered = [Rec(o) for o in run_ if o not in lost]
        drop_once -= lost
        admitted, back = positions.admit(T, delivered)
        if back is not None:
            assert not admitted
            position = back
            continue
        sink.deliver(list(admitted))
    return sink, positions


def test_a_hole_is_not_marked_past_and_is_read_again() -> None:
    log = list(range(20))
    # lost: the last record of one delivery (3) and the first of another (11)
    sink, positions = run(log, 0, {3, 11})
    assert sink.written == log  # every record once, in order: nothing was lost
    assert positions.holes_refetched == 2 and positions.gaps_accepted == 0
    assert positions.next[T] == 20


def test_the_batch_after_a_hole_is_refused_whole() -> None:
    p = Positions()
    p.reset({T: 0})
    run1, back1 = p.admit(T, [Rec(0), Rec(1), Rec(2)])
    assert [r.offset for r in run1] == [0, 1, 2] and back1 is None
    # offset 3 was dropped on the way: nothing from 4 on may reach a sink
    run2, back2 = p.admit(T, [Rec(4), Rec(5)])
    assert not run2 and back2 == 3 and p.next[T] == 3
    # records read before the seek back are refused too, without another seek
    run3, back3 = p.admit(T, [Rec(6), Rec(7)])
    assert not run3 and back3 is None and p.holes_refetched == 1
    run4, back4 = p.admit(T, [Rec(3), Rec(4), Rec(5)])
    assert [r.offset for r in run4] == [3, 4, 5] and back4 is None


def test_offsets_that_do_not_exist_are_skipped_once_a_refetch_proves_it() -> None:
    log = [0, 1, 2, 6, 7, 9, 10]  # compacted: 3-5 and 8 do not exist
    sink, positions = run(log, 0, set(), batch=3)
    assert sink.written == log
    # 0 1 2 | 6 7 9: the run after 2 starts at 6 -> re-read from 3 proves the gap
    assert positions.holes_refetched == 1 and positions.gaps_accepted == 1


def test_a_gap_right_after_our_own_seek_is_already_proven() -> None:
    p = Positions()
    p.reset({T: 3})  # sought to 3 (e.g. retention deleted 3 and 4)
    got, back = p.admit(T, [Rec(5), Rec(6)])
    assert [r.offset for r in got] == [5, 6] and back is None and p.gaps_accepted == 1


def test_records_already_processed_are_dropped_and_disorder_is_cut() -> None:
    p = Positions()
    p.reset({T: 10})
    got, back = p.admit(T, [Rec(8), Rec(9), Rec(10), Rec(11), Rec(11), Rec(12)])
    assert [r.offset for r in got] == [10, 11] and back is None and p.next[T] == 12
    assert p.admit(TP("other", 0), [Rec(0)]) == ((), None)  # not assigned to us


def test_records_below_what_was_admitted_are_reported_to_be_checked() -> None:
    """A fall-back is dropped but not forgotten: the reader asks the broker whether
    it is a redelivery or a topic created again (SourceReader._recreated)."""
    p = Positions()
    p.reset({T: 0})
    p.admit(T, [Rec(0), Rec(1), Rec(2), Rec(3), Rec(4)])
    assert p.fell_back() == {}
    got, back = p.admit(T, [Rec(2), Rec(3)])
    assert not got and back is None and p.next[T] == 5
    got, _ = p.admit(T, [Rec(0), Rec(1), Rec(5)])
    assert [r.offset for r in got] == [5]
    assert p.fell_back() == {T: 0}  # the lowest offset it fell back to
    assert p.fell_back() == {}  # reported once
    p.admit(T, [Rec(1)])
    p.reset({T: 0})  # a new assignment: its own seek explains everything before
    assert p.fell_back() == {}


def test_ack_hands_faust_every_offset_of_the_batch_from_the_committed_one() -> None:
    consumer = SimpleNamespace(
        _committed_offset=defaultdict(lambda: None, {T: 12}),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _n_acked=0,
    )
    app: Any = SimpleNamespace(consumer=consumer, monitor=SimpleNamespace(stream_inbound_time={}))
    reader = SourceReader(app, ["orders"])
    other = TP("orders", 1)
    reader.ack(SourceBatch(records=[], spans={T: (10, 15), other: (0, 3)}, epoch=0))
    assert consumer._acked[T] == [12, 13, 14]  # below the committed offset: ignored, as faust does
    assert consumer._acked[other] == [0, 1, 2]
    assert consumer._n_acked == 6 and set(app.monitor.stream_inbound_time) == {T, other}


def reader_on(rebalancing: bool) -> tuple[SourceReader, Any]:
    consumer = SimpleNamespace(unacked=set(), _waiting_for_ack=None, flow_active=True)
    app: Any = SimpleNamespace(
        consumer=consumer,
        rebalancing=rebalancing,
        flow_control=SimpleNamespace(is_active=lambda: True),
    )
    return SourceReader(app, ["orders"]), consumer


def test_a_batch_is_in_flight_for_faust_while_processed() -> None:
    reader, consumer = reader_on(rebalancing=False)
    with reader.in_flight(SourceBatch([], {}, epoch=0)) as current:
        assert current and len(consumer.unacked) == 1  # a revoke waits for it
    assert not consumer.unacked and reader.epoch == 0


def test_a_batch_read_before_a_rebalance_is_dropped_with_what_was_read_after_it() -> None:
    reader, consumer = reader_on(rebalancing=True)
    with reader.in_flight(SourceBatch([], {}, epoch=0)) as current:
        assert not current and not consumer.unacked
    # the next batch (read ahead under epoch 0) is void too; positions are sought again
    assert reader.epoch == 1
    with reader.in_flight(SourceBatch([], {}, epoch=0)) as current:
        assert not current


async def test_faust_fetcher_gets_a_snapshot_without_the_source_partitions(
    monkeypatch: Any,
) -> None:
    """faust's fetcher passes its live set of active partitions; the fetch itself
    runs later on the consumer thread.  A set that gained the source partitions
    meanwhile made faust's fetcher drain their records, which the reader then
    never saw (lost, or a partition stalled behind them: the outbox and aggregate
    restart tests, 1 run in 3)."""
    from eventpipe.pipelines.faust_adapter import AIOKafkaFaustConsumer, SourceConsumer

    changelog, source = TP("p-dedup-changelog", 0), TP("orders", 0)
    live = {changelog}
    seen: list[set[TP]] = []

    async def fetch(self: Any, active: set[TP], timeout: float) -> dict[Any, Any]:
        live.add(source)  # faust resumes the source partitions before the fetch runs
        seen.append(set(active))
        return {}

    monkeypatch.setattr(AIOKafkaFaustConsumer, "_getmany", fetch)
    consumer = SourceConsumer.__new__(SourceConsumer)
    consumer.source_topics = frozenset({"orders"})
    assert await consumer._getmany(live, 0.01) == {}
    assert seen == [{changelog}]
    live.discard(source)
    live.add(TP("orders", 1))  # only source partitions: nothing is fetched
    live.discard(changelog)
    seen.clear()
    assert await consumer._getmany(live, 0.01) == {}
    assert seen == []


class FakeProbe:
    """What the broker answers about the topic: its id now, its partition ends."""

    def __init__(self, topic_id: Any, end: int) -> None:
        self.topic_id = topic_id
        self.end = end

    async def ids(self, topics: Any) -> dict[str, Any]:
        return dict.fromkeys(topics, self.topic_id)

    async def ends(self, tps: Any, marks: Any) -> dict[tuple[str, int], int]:
        return {tuple(tp): self.end for tp in tps}


async def _fell_back_with(was: Any, now: Any, end: int) -> tuple[bool, SourceReader]:
    reader, _ = reader_on(rebalancing=False)
    reader._probe = FakeProbe(now, end)  # type: ignore[assignment]
    reader._ids = {"orders": was}
    reader.positions.reset({T: 0})
    reader.positions.admit(T, [Rec(o) for o in range(5)])
    renewed = await reader._recreated({T: 0}, epoch=0)
    return renewed, reader


async def test_a_fall_back_is_a_new_topic_only_when_the_broker_says_so() -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    # Same topic id: a redelivery, dropped; the assignment stands.
    renewed, reader = await _fell_back_with(old, old, end=9)
    assert not renewed and reader.redeliveries == 1 and reader.epoch == 0
    # Another id: the assignment is established again, reading that partition anew.
    renewed, reader = await _fell_back_with(old, new, end=9)
    assert renewed and reader.epoch == 1 and reader._renewed == {T}
    # No ids: the partition's end below what was read tells (and only that).
    renewed, reader = await _fell_back_with(None, None, end=3)
    assert renewed and reader._renewed == {T}
    renewed, reader = await _fell_back_with(None, None, end=5)
    assert not renewed and reader.redeliveries == 1
