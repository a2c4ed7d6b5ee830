"""Retry delays, the circuit breaker, windows, the aggregate and the dedup table."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from eventpipe.breaker import CircuitBreaker
from eventpipe.connectors.sinks.http import parse_retry_after
from eventpipe.envelope import CloudEvent
from eventpipe.errors import HttpStatusError
from eventpipe.pipelines.aggregate import AggregateConfig, Aggregator, window_starts
from eventpipe.pipelines.dedup_table import DedupTable
from eventpipe.pipelines.outcome import probe, sort_write
from eventpipe.pipelines.retry import RetryPolicy
from eventpipe.pipelines.spec import RetrySpec
from eventpipe.sink import DeliveryItem, HeldForOrderError, SinkUnavailableError
from eventpipe.transforms.errors import TransformError


@contextlib.contextmanager
def no_event(_: object) -> Iterator[None]:
    yield


def test_exponential_backoff_with_jitter_is_bounded() -> None:
    p = RetryPolicy(RetrySpec(initial=0.2, max=1.0, jitter=True), rng=random.Random(1))
    for n, full in [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (10, 1.0)]:
        for _ in range(50):
            assert full / 2 <= p.delay(n) <= full
    assert RetryPolicy(RetrySpec(initial=0.2, max=5, jitter=False)).delay(3) == 0.8
    assert RetryPolicy(RetrySpec(backoff="constant", initial=0.3, jitter=False)).delay(9) == 0.3
    assert RetryPolicy(RetrySpec(initial=0.1, max=5, jitter=False)).delay(1, retry_after=4) == 4


def test_retry_after_is_honoured_up_to_retry_max() -> None:
    """A server's Retry-After raises the delay, but never past ``retry.max``: a far-off
    date must not hold a partition for a day."""
    p = RetryPolicy(RetrySpec(initial=0.1, max=30, jitter=True), rng=random.Random(3))
    assert p.delay(1, retry_after=86_400) == 30
    assert p.delay(1, retry_after=12) == 12
    assert p.delay(1, retry_after=parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT")) == 30


def test_circuit_breaker_opens_and_half_opens() -> None:
    b = CircuitBreaker(failure_threshold=2, reset_timeout=0.05)
    assert not b.record_failure() and b.state == "closed"
    assert b.record_failure() and b.state == "open" and b.wait_time() > 0
    import time

    time.sleep(0.06)
    assert b.state == "half_open" and b.wait_time() == 0
    assert b.record_failure() and b.state == "open"  # the probe failed: open again
    b.record_success()
    assert b.state == "closed" and b.failures == 0


def test_write_outcome_sorts_records_and_says_when_unavailability_dominated() -> None:
    ev = CloudEvent.create("t", "/s", {})
    items = [DeliveryItem(i, [ev]) for i in range(6)]
    down = SinkUnavailableError("503", retry_after=2.0)
    w = sort_write(
        items,
        {
            1: down,
            2: SinkUnavailableError("timeout"),
            3: HttpStatusError(500),
            4: HeldForOrderError(),
        },
    )
    assert [it.index for it in w.delivered] == [0, 5]
    assert [it.index for it, _ in w.held] == [1, 2] and w.retry_after() == 2.0
    assert [it.index for it in w.deferred] == [4]
    assert [it.index for it, _ in w.failed] == [3]
    # 2 held of 5 tried (the deferred one was not tried): not dominated.
    assert w.tried == 5 and not w.unavailable
    assert sort_write(items[:4], {1: down, 2: down, 3: HttpStatusError(400)}).unavailable
    assert not sort_write(items, {}).unavailable


def test_a_probe_is_the_first_record_with_events() -> None:
    ev = CloudEvent.create("t", "/s", {})
    items = [DeliveryItem(0, []), DeliveryItem(1, [ev, ev]), DeliveryItem(2, [ev])]
    assert [it.index for it in probe(items)] == [0, 1]
    assert probe([DeliveryItem(0, [])]) == [DeliveryItem(0, [])]


def test_retry_after() -> None:
    assert parse_retry_after("3") == 3
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0


def test_window_starts() -> None:
    assert window_starts(125_000, 60_000, 60_000) == [120_000]
    assert window_starts(125_000, 60_000, 20_000) == [80_000, 100_000, 120_000]
    assert window_starts(120_000, 60_000, 20_000) == [80_000, 100_000, 120_000]


def ev(i: int, amount: float, key: str = "c1", sec: int = 5) -> CloudEvent:
    return CloudEvent.create(
        "sale",
        "/s",
        {"amount": amount},
        id=f"e{i}",
        partitionkey=key,
        time=datetime(2026, 1, 1, 0, 0, sec, tzinfo=UTC),
    )


def test_aggregate_sum_and_replay_is_not_counted_twice() -> None:
    cfg = AggregateConfig.model_validate(
        {"op": "sum", "value": ".data.amount", "window": {"tumbling": "1m"}}
    )
    table: dict[str, object] = {}
    agg = Aggregator(cfg, table, pipeline="p", path="steps[0].aggregate", use_event=no_event)
    assert agg.process(ev(1, 2), None, 0, 10)[0].data["value"] == 2
    out = agg.process(ev(2, 3), None, 0, 11)
    assert out[0].data["value"] == 5 and out[0].data["count"] == 2
    replay = agg.process(ev(2, 3), None, 0, 11)  # re-read after a crash: same offset
    assert replay[0].data["value"] == 5 and replay[0].id == out[0].id == "e2:1767225600000"
    with pytest.raises(TransformError):
        bad = CloudEvent.create("sale", "/s", {"amount": "x"}, partitionkey="c1")
        agg.process(bad, None, 0, 12)


def test_aggregate_hopping_count_and_max() -> None:
    cfg = AggregateConfig.model_validate(
        {"op": "max", "value": ".data.amount", "window": {"hopping": {"size": "1m", "step": "30s"}}}
    )
    agg = Aggregator(cfg, {}, pipeline="p", path="s", use_event=no_event)
    assert len(agg.process(ev(1, 7, sec=40), None, 0, 1)) == 2
    assert [u.data["value"] for u in agg.process(ev(2, 3, sec=45), None, 0, 2)] == [7, 7]
    with pytest.raises(ValueError):
        AggregateConfig.model_validate({"window": {"hopping": {"size": "1m", "step": "2m"}}})


def test_dedup_table_marks_and_expires() -> None:
    now = [1000.0]
    table: dict[str, object] = {}
    d = DedupTable(table, 60, no_event, clock=lambda: now[0])
    k = d.key("/src", "id-1")
    assert not d.seen(k)
    d.mark(k, 2)
    assert d.seen(k)
    now[0] += 61
    assert not d.seen(k)  # outside the window
    assert d.expire({2: object()}) == 1 and k not in table
    # a restarted worker indexes what the changelog restored
    table[d.key("/src", "old")] = [int(now[0] * 1000) - 120_000, 1]
    d2 = DedupTable(table, 60, no_event, clock=lambda: now[0])
    assert d2.expire({1: object()}) == 1 and not table
