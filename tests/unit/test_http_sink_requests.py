"""How the http sink turns a write into requests: lanes (order per key), keys, and
which failure a record with several events keeps."""

from __future__ import annotations

from eventpipe.connectors.sinks.http_requests import (
    batch_requests,
    event_requests,
    lanes,
    put_failure,
)
from eventpipe.envelope import CloudEvent
from eventpipe.errors import HttpStatusError, InvalidEventError
from eventpipe.sink import DeliveryItem, HeldForOrderError, SinkUnavailableError


def ev(id: str, **ext: str) -> CloudEvent:
    return CloudEvent.create("t", "/s", {"id": id}, id=id, **ext)


def test_lanes_follow_partitionkey_then_record_key_and_keep_order() -> None:
    items = [
        DeliveryItem(0, [ev("a1", partitionkey="a")], key=b"ignored"),
        DeliveryItem(1, [ev("n1")]),  # no key at all: a lane of its own
        DeliveryItem(2, [ev("b1")], key=b"b"),
        DeliveryItem(3, [ev("a2")], key=b"a"),  # the record key "a" is partitionkey "a"
        DeliveryItem(4, [ev("n2")]),
        DeliveryItem(5, [ev("b2", partitionkey="b")]),
    ]
    failed: dict[int, BaseException] = {}
    reqs = event_requests(items, mode="binary", ordered=True, failed=failed)
    assert not failed
    assert [[r.key for r in lane] for lane in lanes(reqs)] == [
        ["a1", "a2"],
        ["n1"],
        ["b1", "b2"],
        ["n2"],
    ]
    unordered = event_requests(items, mode="binary", ordered=False, failed=failed)
    assert [len(lane) for lane in lanes(unordered)] == [1] * 6


def test_an_event_that_cannot_be_encoded_fails_its_record_only() -> None:
    bad = CloudEvent(
        id="x", source="/s", type="t", data="d", datacontenttype="a/b\nc: d", validate=False
    )
    failed: dict[int, BaseException] = {}
    reqs = event_requests(
        [DeliveryItem(0, [bad]), DeliveryItem(1, [ev("ok")])],
        mode="binary",
        ordered=True,
        failed=failed,
    )
    assert [r.indexes for r in reqs] == [[1]]
    assert isinstance(failed[0], InvalidEventError)


def test_a_record_keeps_its_worst_failure() -> None:
    failed: dict[int, BaseException] = {}
    for exc in (
        HeldForOrderError("later"),
        SinkUnavailableError("503"),
        HttpStatusError(500),
        HttpStatusError(400),
        SinkUnavailableError("503 again"),
    ):
        put_failure(failed, 7, exc)
    assert isinstance(failed[7], HttpStatusError) and failed[7].status == 400
    put_failure(failed, 8, SinkUnavailableError("503"))
    put_failure(failed, 8, HeldForOrderError("later"))
    assert isinstance(failed[8], SinkUnavailableError)


def test_batch_chunks_are_aligned_on_offsets_whatever_the_batch() -> None:
    """The same records cut into pipeline batches differently give the same chunk
    requests (same ids, same key) wherever a chunk is whole in both."""

    def items(offsets: range) -> list[DeliveryItem]:
        return [DeliveryItem(o, [ev(f"e-{o}")], "t", 0, o) for o in offsets]

    def chunks(offsets: range) -> dict[str, list[int]]:
        failed: dict[int, BaseException] = {}
        reqs = batch_requests(items(offsets), size=10, ordered=True, failed=failed)
        assert not failed and {r.lane for r in reqs} == {("t", 0)}
        return {r.key: r.indexes for r in reqs}

    whole = chunks(range(0, 40))
    assert sorted(whole.values()) == [list(range(k, k + 10)) for k in (0, 10, 20, 30)]
    cut = chunks(range(5, 35))  # a batch starting and ending mid-chunk
    assert sorted(cut.values()) == [
        list(range(5, 10)),
        list(range(10, 20)),
        list(range(20, 30)),
        list(range(30, 35)),
    ]
    common = set(whole) & set(cut)
    assert sorted(whole[k] for k in common) == [list(range(10, 20)), list(range(20, 30))]


def test_a_record_that_cannot_be_encoded_leaves_its_chunk() -> None:
    bad = CloudEvent(id="x", source="/s", type="t", data={1, 2}, validate=False)
    failed: dict[int, BaseException] = {}
    items = [DeliveryItem(0, [ev("a")], "t", 0, 0), DeliveryItem(1, [bad], "t", 0, 1)]
    reqs = batch_requests(items, size=10, ordered=False, failed=failed)
    assert [r.indexes for r in reqs] == [[0]] and reqs[0].lane is None
    assert isinstance(failed[1], InvalidEventError)
