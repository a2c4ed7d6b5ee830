"""The internals of faust-streaming (and of mode and aiokafka, reached through it)
that eventpipe/pipelines/faust_adapter.py relies on are still there, with the shape
and the behaviour relied on.  A failure names the adapter function to update; run
this file first after moving a pin in pyproject.toml.

Nothing here needs a broker: the faust app is built, never started (its broker
address is a closed port), and aiokafka's consumer and fetcher are built around
a subscription assigned by hand."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import tomllib
from collections.abc import AsyncIterator, Iterator, Mapping
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import faust.streams
import mode.utils.futures
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.structs import TopicPartition
from faust.exceptions import NotReady
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.transport.drivers.aiokafka import Producer as AIOKafkaFaustProducer
from faust.types import TP
from packaging.requirements import Requirement

PINNED = ("faust-streaming", "mode-streaming", "aiokafka")
INSTALLED = ", ".join(f"{name} {version(name)}" for name in PINNED)

try:
    from eventpipe.pipelines import faust_adapter
    from eventpipe.pipelines.faust_adapter import (
        FETCH_MAX_WAIT_MS,
        EventHandle,
        SourceConsumer,
        _SourceConsumerThread,
    )
except ImportError as exc:
    raise ImportError(
        f"eventpipe/pipelines/faust_adapter.py imports a name that {INSTALLED} no longer "
        f"has ({exc}): update the adapter function that uses it (current_event: "
        "faust.streams._current_event; SourceConsumer: faust.transport.drivers.aiokafka"
        ".Consumer and AIOKafkaConsumerThread; in_flight: mode.utils.futures.notify)"
    ) from exc
SOURCE = "src"
T0 = TP(SOURCE, 0)


@contextlib.contextmanager
def relied_on_by(function: str, what: str) -> Iterator[None]:
    """Any failure inside is reported as the adapter function that must change."""
    try:
        yield
    except Exception as exc:
        pytest.fail(
            f"eventpipe/pipelines/faust_adapter.py: {function} relies on {what}; with "
            f"{INSTALLED} that no longer holds ({type(exc).__name__}: {exc}). Update "
            f"{function} for this version (and the tested range in pyproject.toml).",
        )


def params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


@pytest.fixture
async def app() -> AsyncIterator[faust.App]:
    """A faust app with the pipelines' source consumer, as the runtime builds it."""
    a = faust.App(
        "internals-probe",
        broker="kafka://127.0.0.1:1",
        store="memory://",
        web_enabled=False,
    )
    faust_adapter.install_source_consumer(a, frozenset({SOURCE}))
    yield a
    consumer: Any = a.consumer
    loop = consumer._thread.thread_loop
    if not loop.is_closed():
        loop.close()


@pytest.fixture
def thread(app: faust.App) -> Any:
    """faust's consumer thread of ``app`` (not started)."""
    consumer: Any = app.consumer
    return consumer._thread


# ------------------------------------------------------------------ the pins
def test_installed_versions_are_in_the_tested_ranges() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    wanted = {Requirement(r).name: Requirement(r) for r in pyproject["project"]["dependencies"]}
    for name in PINNED:
        req = wanted.get(name)
        assert req is not None and req.specifier, f"pyproject.toml: {name} needs a tested range"
        assert req.specifier.contains(version(name)), (
            f"{name} {version(name)} is installed, outside the range tested with "
            f"eventpipe/pipelines/faust_adapter.py ({req}): run this file and the "
            "pipeline integration tests against it before widening the range"
        )


# ------------------------------------------------------- the source consumer
async def test_the_source_consumer_replaces_fausts_and_makes_its_thread(
    app: faust.App, thread: Any
) -> None:
    with relied_on_by(
        "install_source_consumer",
        "App.consumer being made on first use from app.transport.Consumer",
    ):
        assert type(app.consumer) is SourceConsumer
    with relied_on_by(
        "SourceConsumer._new_consumer_thread",
        "ThreadDelegateConsumer.__init__ making its thread with _new_consumer_thread()",
    ):
        assert issubclass(AIOKafkaFaustConsumer, ThreadDelegateConsumer)
        assert params(AIOKafkaFaustConsumer._new_consumer_thread) == ["self"]
        assert type(thread) is _SourceConsumerThread


async def test_the_consumer_thread_builds_aiokafka_with_a_fixed_fetch_wait(
    app: faust.App, thread: Any
) -> None:
    with relied_on_by(
        "_SourceConsumerThread._create_worker_consumer",
        "AIOKafkaConsumerThread._create_worker_consumer(transport) building the aiokafka "
        "consumer with fetch_max_wait_ms fixed at 1500 (a faust setting for it would "
        "replace the override)",
    ):
        assert params(AIOKafkaConsumerThread._create_worker_consumer) == ["self", "transport"]
        transport: Any = app.transport
        theirs = AIOKafkaConsumerThread._create_worker_consumer(thread, transport)
        try:
            assert theirs._fetch_max_wait_ms == 1500
        finally:
            await theirs.stop()
        ours = thread._create_worker_consumer(transport)
        try:
            assert ours._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
        finally:
            await ours.stop()
    with relied_on_by(
        "_SourceConsumerThread._create_worker_consumer",
        "AIOKafkaConsumer.start() handing self._fetch_max_wait_ms to its Fetcher",
    ):
        assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(
            AIOKafkaConsumer.start
        )
        assert "fetch_max_wait_ms" in params(Fetcher.__init__)


def test_faust_fetches_through_getmany_with_its_active_partitions() -> None:
    with relied_on_by(
        "SourceConsumer._getmany",
        "Consumer._getmany(active_partitions, timeout), called by keyword by "
        "Consumer._wait_next_records",
    ):
        for cls in (FaustConsumer, AIOKafkaFaustConsumer):
            assert params(cls._getmany) == ["self", "active_partitions", "timeout"]
        assert "self._getmany(" in inspect.getsource(FaustConsumer._wait_next_records)


def test_a_revoke_passes_through_on_partitions_revoked() -> None:
    with relied_on_by(
        "SourceConsumer.on_partitions_revoked",
        "Consumer.on_partitions_revoked(revoked) dropping the revoked partitions' "
        "acked offsets, and Consumer.commit(topics) committing a set of partitions",
    ):
        assert params(FaustConsumer.on_partitions_revoked) == ["self", "revoked"]
        assert "self._acked.pop(tp" in inspect.getsource(FaustConsumer.on_partitions_revoked)
        assert params(FaustConsumer.commit)[:2] == ["self", "topics"]


async def test_a_settled_assignment_is_read_from_the_app_and_consumer(app: faust.App) -> None:
    a: Any = app
    with relied_on_by(
        "assignment_settled",
        "App.rebalancing, App.flow_control.is_active() and Consumer.flow_active",
    ):
        a.flow_control.resume()
        assert faust_adapter.assignment_settled(app)
        a.rebalancing = True
        assert not faust_adapter.assignment_settled(app)
        a.rebalancing = False
        a.consumer.stop_flow()
        assert a.consumer.flow_active is False
        assert not faust_adapter.assignment_settled(app)
        a.consumer.resume_flow()
        a.flow_control.suspend()
        assert not faust_adapter.assignment_settled(app)


# --------------------------------------------------- faust's consumer thread
async def test_work_runs_on_the_consumer_threads_loop_with_its_aiokafka_consumer(
    app: faust.App, thread: Any
) -> None:
    with relied_on_by(
        "aiokafka_consumer",
        "ThreadDelegateConsumer._thread and AIOKafkaConsumerThread._ensure_consumer(), "
        "which returns the aiokafka consumer its on_start made on thread_loop",
    ):
        assert params(AIOKafkaConsumerThread._ensure_consumer) == ["self"]
        assert "_create_consumer(loop=self.thread_loop)" in inspect.getsource(
            AIOKafkaConsumerThread.on_start
        )
        with pytest.raises(Exception, match="not yet started"):
            faust_adapter.aiokafka_consumer(app)
        thread._consumer = inner = object()
        assert faust_adapter.aiokafka_consumer(app) is inner

    async def where(c: Any, n: int) -> tuple[Any, int, asyncio.AbstractEventLoop]:
        return c, n, asyncio.get_running_loop()

    with relied_on_by("on_consumer_thread", "mode's ServiceThread.thread_loop"):
        loop = thread.thread_loop
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert loop is not asyncio.get_running_loop()
        runner = threading.Thread(target=loop.run_forever, daemon=True)
        runner.start()
        try:
            got = await faust_adapter.on_consumer_thread(app, where, 7)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(runner.join)
        assert got == (inner, 7, loop)


# ------------------------------------------------------ aiokafka's internals
@pytest.fixture
async def group_consumer() -> AsyncIterator[Any]:
    """An aiokafka consumer (not started) with a fetcher, subscribed to the source
    topic as a group member is, its partitions not assigned yet."""
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", enable_auto_commit=False)
    c: Any = consumer
    c._subscription.subscribe({SOURCE})
    c._fetcher = fetcher = Fetcher(c._client, c._subscription)
    try:
        yield consumer
    finally:
        await fetcher.close()
        await consumer.stop()


async def test_rewind_reads_positions_and_buffers_from_aiokafka(group_consumer: Any) -> None:
    c, tp = group_consumer, TopicPartition(SOURCE, 0)
    with relied_on_by(
        "rewind",
        "AIOKafkaConsumer._subscription.subscription.assignment.state_value(tp) "
        "(has_valid_position, position) and AIOKafkaConsumer._fetcher._records",
    ):
        c._subscription.assign_from_subscribed({tp})
        assert isinstance(c._fetcher._records, Mapping)
        # no position yet: sought
        assert await faust_adapter.rewind(c, {tp: 7}) == {tp: (None, "None")}
        state = c._subscription.subscription.assignment.state_value(tp)
        assert state.has_valid_position and state.position == 7
        # already there: left alone
        assert await faust_adapter.rewind(c, {tp: 7}) == {tp: (7, "None")}
        assert await faust_adapter.rewind(c, {tp: 3}) == {tp: (7, "None")}
        assert state.position == 3


async def test_fetch_takes_prefetched_records_as_fausts_fetcher_does(
    group_consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, tp = group_consumer, TopicPartition(SOURCE, 0)
    fetched = c._fetcher.fetched_records
    calls: list[tuple[Any, ...]] = []

    async def spy(partitions: Any, timeout: float, max_records: int) -> Any:
        calls.append((set(partitions), max_records, c._subscription.fetcher_idle_time))
        return await fetched(partitions, timeout=timeout, max_records=max_records)

    with relied_on_by(
        "fetch",
        "AIOKafkaConsumer._subscription.reassignment_in_progress and fetch_context(), "
        "and AIOKafkaConsumer._fetcher.fetched_records(partitions, timeout, max_records)",
    ):
        assert params(Fetcher.fetched_records) == ["self", "partitions", "timeout", "max_records"]
        monkeypatch.setattr(c._fetcher, "fetched_records", spy)
        # a rebalance under way: nothing is taken
        assert c._subscription.reassignment_in_progress is True
        assert await faust_adapter.fetch(c, frozenset({tp}), 0.01, 10) == {}
        assert calls == []
        c._subscription.assign_from_subscribed({tp})
        c.seek(tp, 0)
        assert c._subscription.reassignment_in_progress is False
        assert await faust_adapter.fetch(c, frozenset({tp}), 0.01, 10) == {}
        # taken inside a fetch context (the fetcher is not idle meanwhile)
        assert calls == [({tp}, 10, 0)]
    with relied_on_by(
        "fetch",
        "Fetcher._fetch_max_wait_ms, read by _get_actions_per_node for every fetch "
        "request it builds (so setting it paces the next fetches)",
    ):
        assert "self._fetch_max_wait_ms" in inspect.getsource(Fetcher._get_actions_per_node)
        await faust_adapter.fetch(c, frozenset({tp}), 0.0, 10, 7)
        assert c._fetcher._fetch_max_wait_ms == 7


# --------------------------------------------------- faust's ack bookkeeping
async def test_acked_offsets_are_what_faust_commits(app: faust.App) -> None:
    consumer: Any = app.consumer
    with relied_on_by(
        "ack_offsets",
        "Consumer._committed_offset, _acked, _acked_index and _n_acked, from which "
        "Consumer._new_offset(tp) takes the offset to commit",
    ):
        faust_adapter.ack_offsets(app, {T0: (0, 5)})
        assert consumer._n_acked == 5 and consumer._acked_index[T0] == set(range(5))
        assert consumer._new_offset(T0) == 5
        consumer._committed_offset[T0] = 10
        faust_adapter.ack_offsets(app, {T0: (8, 15)})  # below the committed: ignored
        assert consumer._new_offset(T0) == 15
        faust_adapter.ack_offsets(app, {T0: (20, 25)})  # a hole: not committed past
        assert consumer._new_offset(T0) is None
    with relied_on_by(
        "ack_offsets",
        "Monitor.stream_inbound_time, which the aiokafka driver's stall check reads",
    ):
        assert T0 in app.monitor.stream_inbound_time
        assert "stream_inbound_time" in inspect.getsource(AIOKafkaConsumerThread)


async def test_restarted_acks_are_forgotten(app: faust.App) -> None:
    consumer: Any = app.consumer
    with relied_on_by("restart_acks", "Consumer._acked, _acked_index and _gap per partition"):
        faust_adapter.ack_offsets(app, {T0: (0, 5)})
        await consumer._add_gap(T0, 7, 9)
        assert T0 in consumer._gap
        faust_adapter.restart_acks(app, [T0])
        assert T0 not in consumer._acked and T0 not in consumer._acked_index
        assert T0 not in consumer._gap
        assert consumer._new_offset(T0) is None


async def test_a_batch_in_flight_is_what_a_revoke_waits_for(app: faust.App) -> None:
    consumer: Any = app.consumer
    with relied_on_by(
        "in_flight",
        "Consumer.unacked being the live set Consumer.wait_empty waits on (cleaned by "
        ".acked), and Consumer._waiting_for_ack, the future Consumer.ack notifies",
    ):
        assert consumer._waiting_for_ack is None
        assert "notify(self._waiting_for_ack)" in inspect.getsource(FaustConsumer.ack)
        assert "self._unacked_messages" in inspect.getsource(FaustConsumer.wait_empty)
        waiting = consumer._waiting_for_ack = asyncio.get_running_loop().create_future()
        with faust_adapter.in_flight(app, hold=True):
            assert len(consumer._unacked_messages) == 1
            consumer._clean_unacked_messages()  # not acked yet: kept
            assert len(consumer._unacked_messages) == 1
            assert not waiting.done()
        assert not consumer._unacked_messages and waiting.done()
        with faust_adapter.in_flight(app, hold=False):
            assert not consumer._unacked_messages
    with relied_on_by("in_flight", "mode.utils.futures.notify(fut, result=None)"):
        assert params(mode.utils.futures.notify) == ["fut", "result"]


# ----------------------------------------------------------- the current event
async def test_table_writes_go_to_the_current_events_partition(
    app: faust.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # faust checks the source and changelog partition counts through the consumer,
    # which is not started here
    monkeypatch.setattr(app.consumer, "topic_partitions", lambda topic: None)
    table: Any = app.Table("t", partitions=4, default=None)
    futures: list[Any] = []  # faust's FutureMessage
    with relied_on_by(
        "current_event",
        "faust.streams._current_event, the context variable (of a weak reference) that "
        "faust.streams.current_event() and tables read",
    ):
        handle = EventHandle(TP(SOURCE, 3))
        with faust_adapter.current_event(handle):
            assert faust.streams.current_event() is handle
            assert faust_adapter.current_partition() == 3
        assert faust.streams.current_event() is None
        with pytest.raises(TypeError):
            faust_adapter.current_partition()
    with relied_on_by(
        "collect_changelog_sends",
        "Table.__setitem__/__delitem__ sending through self.send_changelog(partition, "
        "key, value, ...) with the current event's message.partition",
    ):
        faust_adapter.collect_changelog_sends(table, futures)
        with faust_adapter.current_event(handle):
            table["k"] = 1
            del table["k"]
        assert [f.message.partition for f in futures] == [3, 3]
        assert "k" not in table.data


async def test_the_changelog_producer_is_the_aiokafka_one(app: faust.App) -> None:
    with relied_on_by(
        "changelog_producer",
        "faust's aiokafka Producer._ensure_producer(), the started aiokafka producer",
    ):
        producer: Any = app.producer
        assert isinstance(producer, AIOKafkaFaustProducer)
        assert params(AIOKafkaFaustProducer._ensure_producer) == ["self"]
        with pytest.raises(NotReady):
            faust_adapter.changelog_producer(app)
        producer._producer = inner = SimpleNamespace()
        assert faust_adapter.changelog_producer(app) is inner
