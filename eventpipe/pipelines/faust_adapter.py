"""The wall around faust-streaming: every use of its internals -- and of mode's and
aiokafka's, reached through faust -- is in this module, nowhere else in eventpipe.

Written against faust-streaming 0.15.3, mode-streaming 0.7.1 and aiokafka 0.14.0,
the ranges pinned in pyproject.toml.  ``tests/unit/test_faust_internals.py`` checks
every internal used here (it exists, has the shape used here, behaves as relied
on) and names the function below that must change when one does: run it first
when moving the pins.

Why a pipeline needs faust's internals at all (the reasons in full are in
:mod:`eventpipe.pipelines.partition_reader` and :mod:`eventpipe.pipelines.changelog`):

* its agent reads the source partitions itself, in batches, straight from faust's
  aiokafka consumer, because faust's fetcher -> conductor -> channel path dropped
  records around rebalances (and cost two tasks and four futures per record).
  faust keeps group membership, table recovery and commits, so faust's fetcher
  must be kept off the source partitions (:class:`SourceConsumer`), the batch must
  be held as in flight and its offsets acked in faust's bookkeeping, and the
  fetches, seeks and positions run on faust's consumer thread;
* table writes of a batch are flushed (and awaited) before its offsets are acked,
  so the changelog records go out in producer batches, or, with ``exactly_once``,
  faust's own sends are collected to be awaited.

Everything else in :mod:`eventpipe.pipelines` uses faust's public API
(``faust.App`` and its settings, ``app.Table``, ``app.topic``, ``app.agent``,
``app.start``/``stop``, the rebalance signals, ``consumer.assignment``/``highwater``,
tables' ``data``, ``changelog_topic`` and serializers) and this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from faust.streams import _current_event
from faust.streams import current_event as _faust_current_event
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.types import TP
from mode.utils.futures import notify

if TYPE_CHECKING:
    import faust
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)


# ------------------------------------------------ faust's fetcher, off the sources
FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a fetch that has no data yet, while the pipeline is
idle.  faust fixes 1500 ms and Kafka's default is 500; Tansu sometimes holds a
fetch for that long although the partition has data (a 100 ms empty fetch, then
316 ms for the next one, in the middle of a backlog), which stalled
bench/pipeline.py's backlog.  At 100 ms an idle pipeline sends ten fetches a
second, which costs nothing worth measuring."""
FETCH_WAIT_ACTIVE_MS = 5
"""... while records came within the last :data:`ACTIVE_FOR_S`: Tansu does not
answer a held fetch when data arrives, it looks again part-way through the wait
(55-80 ms into a 100 ms one), which a record arriving meanwhile waits out; 5 ms
bounds that.  Against Apache Kafka, which answers as soon as data is there, the
wait changes nothing else."""
ACTIVE_FOR_S = 1.0


class _SourceConsumerThread(AIOKafkaConsumerThread):
    """faust's consumer thread, whose aiokafka consumer waits at most
    :data:`FETCH_MAX_WAIT_MS` on the broker.

    Relies on (faust 0.15): ``AIOKafkaConsumerThread._create_worker_consumer(transport)``
    builds the aiokafka consumer, with ``fetch_max_wait_ms=1500`` fixed (no setting);
    (aiokafka 0.14): ``AIOKafkaConsumer._fetch_max_wait_ms`` is read when ``start()``
    builds its fetcher, so setting it before the start is the same as passing it."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class SourceConsumer(AIOKafkaFaustConsumer):
    """faust's aiokafka consumer, except that its fetcher leaves the partitions of
    ``source_topics`` to the pipeline's agent (the partition reader), and that a
    revoke commits what was acked first.

    Relies on (faust 0.15): ``ThreadDelegateConsumer.__init__`` creating its thread
    with ``_new_consumer_thread()``; ``Consumer._wait_next_records`` fetching with
    ``self._getmany(active_partitions=..., timeout=...)``, passing its live set of
    active partitions; ``Consumer.on_partitions_revoked(revoked)`` dropping the
    revoked partitions' ``_acked`` offsets before the app's revoke handler commits."""

    source_topics: frozenset[str] = frozenset()

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _SourceConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # faust drops the acked-but-uncommitted offsets of revoked partitions before
        # its revoke handler commits, so the next owner would process up to a commit
        # interval of records again.  Commit them while they are still known.
        if revoked:
            try:
                await self.commit(revoked)
            except Exception as exc:  # the rebalance goes on; at worst: duplicates
                log.warning("pipeline source: commit before revoke failed: %r", exc)
        await super().on_partitions_revoked(revoked)

    async def _getmany(
        self,
        active_partitions: set[TP] | None,
        timeout: float,  # noqa: ASYNC109 (faust's)
    ) -> Any:
        if active_partitions and self.source_topics:
            # Always a snapshot: faust's set is live, and the fetch runs later, on the
            # consumer thread.  Passed on as is, it could gain the source partitions
            # meanwhile (recovery resuming them), and faust's fetcher then drained
            # their records: they never reached the reader, which lost them (taken
            # before it sought the partition to its start) or stalled behind them.
            theirs = {tp for tp in active_partitions if tp.topic not in self.source_topics}
            if not theirs:
                # An empty set would make aiokafka return every partition.
                await asyncio.sleep(min(timeout, 1.0))
                return {}
            active_partitions = theirs
        return await super()._getmany(active_partitions, timeout)


def install_source_consumer(app: faust.App, topics: frozenset[str]) -> None:
    """Give ``app`` a :class:`SourceConsumer` that leaves ``topics`` to the agent.
    Call before anything touches ``app.consumer`` (it is created on first use).

    Relies on (faust 0.15): ``App.consumer`` being created on first use by
    ``app.transport.create_consumer``, which instantiates ``transport.Consumer``
    (a class attribute, shadowed here on the app's transport instance)."""
    transport: Any = app.transport
    transport.Consumer = SourceConsumer
    consumer = app.consumer
    if not isinstance(consumer, SourceConsumer):
        raise RuntimeError(
            f"faust app {app.conf.id}: its consumer was created before the source "
            "consumer was installed"
        )
    consumer.source_topics = topics


def assignment_settled(app: faust.App) -> bool:
    """The assignment is complete: no rebalance under way, table recovery done and
    the stream flowing (faust resumes flow only after recovery).

    Relies on (faust 0.15): ``App.rebalancing``, ``Consumer.flow_active`` and
    ``App.flow_control.is_active()``, which faust sets across a rebalance."""
    a: Any = app
    return bool(not a.rebalancing and a.consumer.flow_active and a.flow_control.is_active())


# ----------------------------------------------------------- faust's consumer thread
def aiokafka_consumer(app: faust.App) -> AIOKafkaConsumer:
    """The aiokafka consumer inside the app's faust consumer (once it started).

    Relies on (faust 0.15): ``ThreadDelegateConsumer._thread`` and
    ``AIOKafkaConsumerThread._ensure_consumer()``."""
    consumer: Any = app.consumer
    return consumer._thread._ensure_consumer()


async def on_consumer_thread(
    app: faust.App, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any
) -> Any:
    """Run ``fn(aiokafka consumer, *args)`` on faust's consumer thread, as a task of
    its own: not through faust's method queue (``call_thread``), whose two workers
    faust needs during a rebalance (its fetcher holds one, a commit needs the other;
    a fetch of ours waiting for the reassignment there would deadlock the revoke).

    Relies on (faust 0.15, mode 0.7): the aiokafka consumer lives on the event loop
    ``thread_loop`` of faust's consumer thread (a mode ``ServiceThread``), and
    ``aiokafka_consumer``'s internals."""
    consumer: Any = app.consumer
    thread = consumer._thread
    fut = asyncio.run_coroutine_threadsafe(fn(aiokafka_consumer(app), *args), thread.thread_loop)
    return await asyncio.wrap_future(fut)


# ------------------------------ aiokafka, through faust's consumer thread (run there)
async def rewind(
    consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]
) -> dict[TopicPartition, tuple[int | None, str]]:
    """Seek each partition whose consumer position is not the offset given back to
    it; returns where each stood before (``None``: no valid position) and what
    the consumer held buffered for it (for the log).  Run on the consumer thread.

    Relies on (aiokafka 0.14): ``consumer._subscription.subscription.assignment
    .state_value(tp)`` with ``has_valid_position`` and ``position`` (the position
    without ``consumer.position``'s wait for a reset), and ``consumer._fetcher
    ._records``, the prefetched records per partition."""
    c: Any = consumer
    subscription = c._subscription.subscription
    assignment = None if subscription is None else subscription.assignment
    buffered = c._fetcher._records
    before: dict[TopicPartition, tuple[int | None, str]] = {}
    for tp, offset in offsets.items():
        state = None if assignment is None else assignment.state_value(tp)
        position = state.position if state is not None and state.has_valid_position else None
        before[tp] = (position, repr(buffered.get(tp)))
        if position != offset:
            consumer.seek(tp, offset)
    return before


async def fetch(
    consumer: AIOKafkaConsumer,
    tps: frozenset[TopicPartition],
    wait_s: float,
    max_records: int,
    max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> dict[TopicPartition, list[Any]]:
    """The prefetched records of ``tps`` only (never empty: an empty set means every
    partition to aiokafka, changelogs included), as faust's own fetcher takes them
    (``AIOKafkaConsumerThread._fetch_records``); the broker may hold the fetches
    from now on ``max_wait_ms`` when it has nothing.  Run on the consumer thread.

    Relies on (aiokafka 0.14): ``consumer._subscription.reassignment_in_progress``,
    ``consumer._subscription.fetch_context()``,
    ``consumer._fetcher.fetched_records(partitions, timeout=, max_records=)``
    (``getmany`` would wait for a rebalance, which can wait for this batch) and
    ``consumer._fetcher._fetch_max_wait_ms``, read by each fetch request it builds."""
    c: Any = consumer
    fetcher = c._fetcher
    fetcher._fetch_max_wait_ms = max_wait_ms
    if c._subscription.reassignment_in_progress:
        await asyncio.sleep(min(wait_s, 0.05))  # a rebalance: nothing of ours to read
        return {}
    with c._subscription.fetch_context():
        result: dict[TopicPartition, list[Any]] = await fetcher.fetched_records(
            tps, timeout=wait_s, max_records=max_records
        )
        return result


# ------------------------------------------------------ faust's ack bookkeeping
class _InFlight:
    """Stands in faust's set of unacked messages while a batch is processed, so a
    rebalance (or shutdown) waits for the batch before it commits and hands over.
    ``acked`` and ``refcount`` are what faust's ``Consumer.wait_empty`` reads."""

    __slots__ = ("__weakref__", "acked", "refcount")

    def __init__(self) -> None:
        self.acked = False
        self.refcount = 1

    def __repr__(self) -> str:
        return "<pipeline batch in flight>"


@contextlib.contextmanager
def in_flight(app: faust.App, hold: bool) -> Iterator[None]:
    """While inside: with ``hold``, a batch is in flight for faust (a revoke and a
    stop wait for it).  On the way out, wake whoever waits for acks.

    Relies on (faust 0.15): ``Consumer.unacked`` is the live (weak) set
    ``Consumer.wait_empty`` waits on, whose members it cleans by ``.acked``; it
    sleeps on the future ``Consumer._waiting_for_ack``, resolved by
    ``mode.utils.futures.notify``."""
    consumer: Any = app.consumer
    token = _InFlight()
    if hold:
        consumer.unacked.add(token)
    try:
        yield
    finally:
        token.acked = True
        consumer.unacked.discard(token)
        notify(consumer._waiting_for_ack)


def restart_acks(app: faust.App, tps: Iterable[TP]) -> None:
    """Forget faust's acked offsets of ``tps``: the partitions were just sought to
    where processing starts, and acks from before that would let faust commit
    past a record not yet processed again.

    Relies on (faust 0.15): ``Consumer._acked``, ``_acked_index`` (acked offsets
    per partition) and ``_gap`` (offsets known not to exist)."""
    consumer: Any = app.consumer
    for tp in tps:
        consumer._acked.pop(tp, None)
        consumer._acked_index.pop(tp, None)
        consumer._gap.pop(tp, None)


def ack_offsets(app: faust.App, spans: Mapping[TP, tuple[int, int]]) -> None:
    """A batch is done: ack ``[lo, hi)`` of each partition as faust's
    ``Consumer.ack`` acks a message, so faust's next commit covers them, and tell
    faust's monitor the stream moved (else it logs the partition as stalled).

    Relies on (faust 0.15): ``Consumer._committed_offset`` (offsets below it are
    ignored, as ``Consumer.ack`` does), ``_acked``, ``_acked_index`` and
    ``_n_acked`` (``Consumer._new_offset`` commits the first contiguous run of
    ``_acked``), and ``Monitor.stream_inbound_time`` (read by the aiokafka
    driver's stall check)."""
    consumer: Any = app.consumer
    now = time.monotonic()
    inbound = app.monitor.stream_inbound_time
    for tp, (lo, hi) in spans.items():
        committed = consumer._committed_offset[tp]
        if committed is not None and committed > lo:
            lo = committed
        if lo < hi:
            offsets = range(lo, hi)
            consumer._acked[tp].extend(offsets)
            consumer._acked_index[tp].update(offsets)
            consumer._n_acked += hi - lo
        inbound[tp] = now


# ----------------------------------------------------------- the current event
class _Message:
    __slots__ = ("partition", "topic", "tp")

    def __init__(self, tp: TP) -> None:
        self.topic = tp.topic
        self.partition = tp.partition
        self.tp = tp


class EventHandle:
    """What faust's tables need of the current event: the partition it was read
    from (``event.message.partition``; ``event.message.topic`` for their check
    that source and changelog have as many partitions)."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, tp: TP) -> None:
        self.message = _Message(tp)


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Make ``event`` (an :class:`EventHandle`, or None for no-op) faust's current
    event, so table writes go to its partition.

    Relies on (faust 0.15): ``faust.streams._current_event``, the context variable
    holding a weak reference to the event a stream is processing, which
    ``faust.streams.current_event()`` reads (and tables through it)."""
    if event is None:
        yield
        return
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def current_partition() -> int:
    """The partition of the current event, as faust's tables find it (raising as
    they do outside of one)."""
    event = _faust_current_event()
    if event is None:
        raise TypeError("Cannot modify table key from outside of stream iteration")
    return int(event.message.partition)


# --------------------------------------------------------------------- tables
def collect_changelog_sends(table: Any, futures: list[asyncio.Future[Any]]) -> None:
    """Collect the future of every changelog record ``table`` sends, to be awaited
    before the batch is acked: faust's producer buffer ``flush`` gives up after
    0.1 s without a send, so it cannot be what we wait for.

    Relies on (faust 0.15): ``Table.on_key_set``/``on_key_del`` send through
    ``self.send_changelog(partition, key, value, ...)`` (looked up on the instance,
    so an instance attribute wraps it) and use the returned future's
    ``message.partition``."""
    send = table.send_changelog

    def send_changelog(*args: Any, **kwargs: Any) -> Any:
        fut = send(*args, **kwargs)
        futures.append(fut)
        return fut

    table.send_changelog = send_changelog


def changelog_producer(app: faust.App) -> AIOKafkaProducer:
    """The aiokafka producer of the app's faust producer (once it started), for the
    changelog records written in producer batches (``at_least_once``).

    Relies on (faust 0.15): ``faust.transport.drivers.aiokafka.Producer
    ._ensure_producer()``."""
    producer: Any = app.producer
    return producer._ensure_producer()
