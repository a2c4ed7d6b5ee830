"""Telling incarnations of a topic apart: the Metadata v10/v12 codec (topic ids)
and the judgement over marks.  The broker's answers are given here; the
integration tests (test_pipeline_topic_reset.py and others) ask a real one."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from io import BytesIO
from typing import Any

import pytest

from eventpipe.kafka.incarnation import (
    RETIRED,
    Mark,
    TopicProbe,
    TopicResetError,
    apply_policy,
    find_stale,
)
from eventpipe.kafka.metadata import (
    MetadataResponse_v10,
    MetadataResponse_v12,
    TopicIdsRequest,
    topic_ids_of,
)

OLD, NEW = uuid.uuid4(), uuid.uuid4()


def _topic(name: str, topic_id: uuid.UUID | None, error: int = 0) -> tuple[Any, ...]:
    partition: tuple[Any, ...] = (0, 0, 1, 0, [1], [1], [], {})
    return (error, name, topic_id, False, [partition], -2147483648, {})


@pytest.mark.parametrize("cls", [MetadataResponse_v10, MetadataResponse_v12])
def test_metadata_responses_round_trip_and_give_topic_ids(cls: Any) -> None:
    topics = [_topic("a", NEW), _topic("b", None), _topic("gone", None, 3), _topic("new", OLD, 5)]
    head = [0, [(1, "h", 9092, None, {})], "c", 1, topics]
    fields = [*head, 0, {}] if cls is MetadataResponse_v10 else [*head, {}]
    decoded = cls.decode(BytesIO(cls(*fields).encode()))
    # absent: no such topic (UNKNOWN_TOPIC_OR_PARTITION); a topic just created may
    # answer LEADER_NOT_AVAILABLE with its id; all zeros is "no id"
    assert topic_ids_of(decoded) == {"a": NEW, "b": None, "new": OLD}


def test_the_request_takes_the_highest_version_the_broker_offers() -> None:
    req = TopicIdsRequest(["a"])
    assert req.prepare({3: (0, 11)}).API_VERSION == 10
    assert req.prepare({3: (0, 13)}).API_VERSION == 12
    with pytest.raises(NotImplementedError):
        req.prepare({3: (0, 9)})


class Broker(TopicProbe):
    def __init__(self, ids: dict[str, uuid.UUID | None], ends: dict[tuple[str, int], int]):
        self._ids, self._ends = ids, ends
        self.asked_ends: list[tuple[str, int]] = []

    async def ids(self, topics: Iterable[str]) -> dict[str, uuid.UUID | None]:
        return {t: self._ids[t] for t in topics if t in self._ids}

    async def ends(
        self, tps: Iterable[tuple[str, int]], marks: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], int]:
        self.asked_ends.extend(tps)
        return {tp: self._ends[tp] for tp in tps if tp in self._ends}


async def test_marks_are_judged_by_topic_id_then_by_end_offset() -> None:
    broker = Broker({"t": NEW, "old": None}, {("t", 0): 3, ("t", 1): 50, ("old", 0): 3})
    same = Mark("t", 0, 10, NEW)  # the id matches: fine whatever the end says
    other = Mark("t", 1, 10, OLD)  # another id: stale although the end is past it
    below = Mark("t", 0, 5, None)  # no id: the end (3) is not past the mark
    past = Mark("t", 1, 10, None)  # no id, the end is past it: cannot tell, fine
    no_ids = Mark("old", 0, 2, OLD)  # the broker gives no ids: the end decides
    retired = Mark("t", 0, 99, RETIRED)  # let go by an operator: never judged
    missing = Mark("nope", 0, 7, OLD)  # no such topic now: nothing to read
    stale = await find_stale(broker, [same, other, below, past, no_ids, retired, missing])
    assert {s.mark for s in stale} == {other, below}
    assert {s.mark: s.end for s in stale} == {other: 50, below: 3}
    asked = len(broker.asked_ends)
    assert await find_stale(broker, [same]) == []
    assert len(broker.asked_ends) == asked  # matching ids: no offsets asked for


async def test_the_policy_names_everything_or_lets_go() -> None:
    stale = await find_stale(Broker({"t": NEW}, {("t", 0): 2}), [Mark("t", 0, 9, OLD)])
    with pytest.raises(TopicResetError) as info:
        apply_policy(stale, "fail", owner="pipeline p", option="source.on_topic_reset: reset")
    text = str(info.value)
    assert "pipeline p" in text and "topic t partition 0: mark at offset 9, end offset 2" in text
    assert f"the topic's id is {NEW}, the mark's {OLD}" in text
    assert "source.on_topic_reset: reset" in text
    apply_policy(stale, "reset", owner="pipeline p", option="x")  # logged, not raised
