"""The trace index without a database: fingerprints and where they point, the rows
the writer makes of what producers and pipelines hand it, its bounded queue, and a
candidate record that is not the event (a fingerprint collision)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventpipe import metrics
from eventpipe.embedded.process import free_port
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import to_kafka
from eventpipe.errors import BrokerUnavailableError
from eventpipe.pipelines.batch import Record
from eventpipe.settings import KafkaSettings, Settings, TraceSettings
from eventpipe.trace.fetch import Fetched, fetch_records
from eventpipe.trace.lookup import _batch_offsets, _found
from eventpipe.trace.writer import TraceWriter, produced_rows, read_rows
from eventpipe.trace_hook import fingerprint, fingerprints, positions


def dropped(kind: str) -> float:
    return metrics.TRACE_DROPPED.labels(kind=kind)._value.get()


class Unreachable:
    """A pool whose connections always fail (the database is down)."""

    def connection(self) -> Any:
        raise ConnectionRefusedError("no database here")


@pytest.fixture
async def writer() -> AsyncIterator[TraceWriter]:
    w = TraceWriter(Unreachable(), TraceSettings(queue_size=1000))  # type: ignore[arg-type]
    yield w


# ------------------------------------------------------------ fingerprints
def test_a_fingerprint_is_found_only_on_a_record_boundary() -> None:
    fp = fingerprint("evt-7")
    assert fp == fingerprints(["evt-7"]) and len(fp) == 4
    ids = ["a", "evt-7", "b", "evt-7"]
    assert positions(fingerprints(ids), fp) == [1, 3]
    # the same four bytes straddling two records are not a match
    straddle = b"\x00\x00" + fp + b"\x00\x00"
    assert straddle.find(fp) == 2 and positions(straddle, fp) == []


def test_fingerprints_are_stable_across_processes() -> None:
    # CRC-32 (IEEE) of the UTF-8 id, little-endian, as migration 0017's rows hold it;
    # 0xCBF43926 is the standard check value of CRC-32 over "123456789"
    assert fingerprint("123456789") == (0xCBF43926).to_bytes(4, "little")


# --------------------------------------------------------------- produced
async def test_acknowledged_batches_of_a_partition_make_one_row_in_record_order(
    writer: TraceWriter,
) -> None:
    writer.produced("t", 0, 10, ["a", "b"], None, "publish-api")
    writer.produced("t", 1, 5, ["x", "c", "y"], [1], "publish-api")  # members: only "c"
    writer.produced("t", 0, 12, ["b2"], None, "publish-api")  # right after: one run
    writer.produced("t", 0, 40, ["d"], None, "publish-api")
    writer.produced("t", 0, 13, ["e"], None, "webhook")
    rows = produced_rows(writer._produced)
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("t", 0, "publish-api", [10, 3, 40, 1]),
        ("t", 1, "publish-api", [5, 1]),
        ("t", 0, "webhook", [13, 1]),
    ]
    first = rows[0]
    offsets = _batch_offsets(first[4])
    assert offsets == [10, 11, 12, 40]
    assert [offsets[i] for i in positions(first[5], fingerprint("b2"))] == [12]
    assert [offsets[i] for i in positions(first[5], fingerprint("d"))] == [40]
    assert positions(rows[1][5], fingerprint("c")) == [0]
    assert positions(rows[1][5], fingerprint("x")) == []


def record(offset: int, event: CloudEvent | None, **state: Any) -> Record:
    rec = Record(offset, "in", 2, offset, None, None, None, [])
    rec.event = event
    for k, v in state.items():
        setattr(rec, k, v)
    return rec


async def test_a_pipeline_batch_is_kept_as_one_letter_per_record(writer: TraceWriter) -> None:
    ev = [CloudEvent.create("t", "/s", {}, id=f"e{i}") for i in range(6)]
    batch = [
        record(100, ev[0], outputs=[ev[0]]),
        record(101, ev[1]),  # filtered
        record(102, ev[2], duplicate=True),
        record(103, ev[3], dead=True, failure=("sink", "http")),
        record(104, None, dead=True, failure=("decode", None)),
        record(105, ev[5], outputs=[ev[5].replace(id="o1"), ev[5].replace(id="o2")]),
    ]
    writer.read("p", batch, ["postgres", "http"])
    (row,) = read_rows(writer._read)
    _at, pipeline, topic, partition, first, last, offsets, outcomes, fps, notes, sinks = row
    assert (pipeline, topic, partition, first, last, offsets) == ("p", "in", 2, 100, 105, None)
    assert outcomes == "dfuxxd"
    assert notes.obj == {
        "103": {"dead_letter": {"stage": "sink", "step": "http"}},
        "104": {"dead_letter": {"stage": "decode", "step": None}},
        "105": {"outputs": ["o1", "o2"]},
    }
    assert sinks == ["postgres", "http"]
    assert positions(fps, fingerprint("e3")) == [3]


async def test_pipeline_batches_merge_while_contiguous_and_keep_offsets_when_not(
    writer: TraceWriter,
) -> None:
    ev = CloudEvent.create("t", "/s", {}, id="e")
    writer.read("p", [record(1, ev), record(2, ev)], ["s"])
    writer.read("p", [record(3, ev)], ["s"])  # continues the run: same row
    writer.read("p", [record(7, ev), record(9, ev)], ["s"])  # a gap (compacted, markers)
    writer.read("q", [record(4, ev)], ["s"])  # another pipeline
    rows = read_rows(writer._read)
    assert [(r[1], r[4], r[5], r[6], r[7]) for r in rows] == [
        ("p", 1, 3, None, "fff"),
        ("p", 7, 9, [7, 9], "ff"),
        ("q", 4, 4, None, "f"),
    ]


# ------------------------------------------------------------ the queue
def ten(i: int) -> list[str]:
    return [f"e{i}.{k}" for k in range(10)]


async def test_a_full_queue_drops_new_batches_counts_their_records_and_warns_once(
    writer: TraceWriter, caplog: pytest.LogCaptureFixture
) -> None:
    before_p, before_r = dropped("produced"), dropped("read")
    with caplog.at_level(logging.WARNING, logger="eventpipe.trace.writer"):
        for i in range(130):  # 10 records a batch: 100 batches fit in 1000 records
            writer.produced("t", 0, 10 * i, ten(i), None, "publisher")
        writer.read("p", [record(k, None) for k in range(5)], ["s"])
    assert writer.pending == 1000
    assert dropped("produced") - before_p == 300
    assert dropped("read") - before_r == 5
    warnings = [r for r in caplog.records if "trace.queue_size" in r.getMessage()]
    assert len(warnings) == 1
    # the oldest are kept: the index has no holes in the middle of a run
    assert [e.base for e in writer._produced][:3] == [0, 10, 20]


async def test_a_failed_write_keeps_its_entries_within_the_bound(writer: TraceWriter) -> None:
    for i in range(80):
        writer.produced("t", 0, 10 * i, ten(i), None, "publisher")
    with pytest.raises(ConnectionRefusedError):
        await writer.flush()
    assert writer.pending == 800  # queued again, in order
    assert writer._produced[0].base == 0
    before = dropped("produced")
    for i in range(80, 120):  # 20 batches find room, 20 are dropped
        writer.produced("t", 0, 10 * i, ten(i), None, "publisher")
    assert writer.pending == 1000 and dropped("produced") - before == 200


async def test_stop_without_a_database_gives_up_within_its_bound(
    writer: TraceWriter, caplog: pytest.LogCaptureFixture
) -> None:
    writer.produced("t", 0, 1, ["e"], None, "publisher")
    await writer.start()
    with caplog.at_level(logging.WARNING, logger="eventpipe.trace.writer"):
        await writer.stop()
    assert any("not written at stop" in r.getMessage() for r in caplog.records)


# ------------------------------------------------- a candidate is checked
def fetched(event: CloudEvent, offset: int = 5) -> Fetched:
    msg = to_kafka(event)
    return Fetched("t", 0, offset, 1_700_000_000_000, msg.key, msg.value, msg.headers)


def test_a_candidate_record_that_is_not_the_event_is_not_taken_for_it() -> None:
    settings = Settings()
    other = CloudEvent.create("t", "/s", {}, id="someone-else")
    assert _found(settings, fetched(other), "publisher", "evt-1", None) is None
    mine = CloudEvent.create("t", "/s", {}, id="evt-1")
    found = _found(settings, fetched(mine), "publisher", "evt-1", None)
    assert found is not None and found.offset == 5 and found.event["id"] == "evt-1"
    # another source with the same id is not it either, when the source is given
    assert _found(settings, fetched(mine), "publisher", "evt-1", "/other") is None
    assert _found(settings, None, "publisher", "evt-1", None) is None  # gone (retention)


async def test_an_unreachable_broker_is_a_clear_error_not_a_traceback() -> None:
    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", request_timeout_ms=2000)
    with pytest.raises(BrokerUnavailableError, match="--bootstrap"):
        await fetch_records(kafka, [("t", 0, 1)])
