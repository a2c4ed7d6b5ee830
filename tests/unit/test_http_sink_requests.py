"""How the http sink turns a write into requests: lanes (order per key), keys, and
which failure a record with several events keeps."""

from __future__ import annotations

from eventpipe.connectors.sinks.api import DeliveryItem, HeldForOrderError, SinkUnavailableError
from eventpipe.connectors.sinks.http_requests import event_requests, lanes, put_failure

from eventpipe.envelope import CloudEvent
from eventpipe.errors import HttpStatusError, InvalidEventError


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
