"""How a pipeline's agent reads its source partitions: in batches, straight from the
faust app's consumer, contiguously per partition, one assignment at a time.

Why not faust's channel: faust hands records to an agent through its fetcher ->
conductor -> channel queue, and that path loses records around a rebalance.
Flow control clears every channel queue on revoke *and again on each resume*
(table recovery resumes flow several times), and the fetcher cancels the record
it is handing over when flow stops -- while it goes on delivering later offsets
of the same partition under the same generation (after recovery completes, the
fetcher may still be iterating records fetched before its seek to the committed
offset).  A later offset then reached the sinks and the postgres sink stored it
as the partition's high-water mark; the dropped record, read again after a
seek, was at or below the mark and was skipped: lost.  (faust's commit moved
past it too: its ack bookkeeping lets a hole of one offset right after the
committed offset through.)  Per record, that path also costs faust's fetcher two
tasks and four futures, which capped a pipeline at ~10k events/s.

So the source topics are not read by faust's fetcher
(:class:`~eventpipe.pipelines.faust_adapter.SourceConsumer` leaves them out; it
keeps serving the changelog topics).  The faust app still
owns group membership, assignment, table recovery (the changelog-backed dedup
and aggregate tables), offset commits and rebalance hand-over: the agent marks
its batch in flight as an unacked message, so a revoke waits for it, and acks
its offsets through faust's ack bookkeeping, so faust commits them.  The agent
reads from the same aiokafka consumer, on faust's consumer thread (every use of
faust's internals is in :mod:`eventpipe.pipelines.faust_adapter`), and
:class:`Positions` keeps the one invariant the exactly-once sinks' high-water
marks rely on:

* once an assignment is complete (table recovery done), every source partition
  is sought to its start -- the committed offset, lowered to the lowest
  high-water mark + 1 of the pipeline's exactly-once sinks -- before anything
  of it is processed; nothing read before that seek is used;
* after that, the records of a partition reach the batch processor in offset
  order with no hole: a record beyond the next expected offset is not
  processed; the partition is sought back to the expected offset and read
  again, and the gap is accepted only when a fetch from the expected offset
  itself answers with a later offset (the offsets do not exist: compaction,
  transaction markers, retention);
* a batch read under an older assignment is dropped unprocessed;
* a partition that has lag and does not move between two lag reports, while
  the consumer stands past the next offset to process (records taken from its
  buffer that never reached the processor, with no later record to show the
  hole), is sought back to that offset (:meth:`SourceReader.reread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka.structs import TopicPartition
from faust.types import TP

from eventpipe.kafka.incarnation import Mark, TopicProbe, TopicResetError, ends_below, find_stale

from . import faust_adapter
from .batch import Record
from .faust_adapter import EventHandle

if TYPE_CHECKING:
    import faust
    from aiokafka import AIOKafkaConsumer

log = logging.getLogger("eventpipe.pipelines")
FIRST_RECORD_WAIT_S = 1.0  # a batch's wait for its first record, before answering None
BUSY_TAKE_S = 0.005  # while the batch before is processed: take what arrived this often


class _Offsets(Protocol):
    """What :class:`Positions` needs of a fetched record."""

    @property
    def offset(self) -> int: ...


@dataclass
class Positions:
    """The next offset to process, per partition, within one assignment.

    ``admit`` gets each run of a partition's records as one fetch returned them
    and returns the part that may be processed -- always a run that starts at the
    expected offset -- plus, when the run would skip ahead, the offset to seek
    back to.  Within one fetched run, offsets that are absent do not exist (the
    broker answered one fetch); the edge between runs is what is checked.
    """

    next: dict[TP, int] = field(default_factory=dict)
    # partition -> (offset we sought it to, highest offset a re-read may start at:
    # the record that showed the hole; None after an assignment's own seek), while
    # nothing has been admitted since the seek
    sought: dict[TP, tuple[int, int | None]] = field(default_factory=dict)
    gaps_accepted: int = 0
    holes_refetched: int = 0
    # partition -> the lowest offset it fell back to below what was admitted (no
    # seek of ours goes there): a redelivery, or a topic created again under its
    # name; SourceReader asks the broker which (see ``fell_back``)
    behind: dict[TP, int] = field(default_factory=dict)

    def reset(self, starts: dict[TP, int]) -> None:
        """A new assignment: every partition was just sought to ``starts``."""
        self.next = dict(starts)
        self.sought = {tp: (o, None) for tp, o in starts.items()}
        self.behind = {}

    def fell_back(self) -> dict[TP, int]:
        """The partitions that fell back since the last call (and to where)."""
        out, self.behind = self.behind, {}
        return out

    def admit(self, tp: TP, records: Sequence[_Offsets]) -> tuple[Sequence[_Offsets], int | None]:
        expected = self.next.get(tp)
        if expected is None or not records:
            return (), None  # not (or no longer) ours
        n = len(records)
        i = 0
        while i < n and records[i].offset < expected:
            i += 1  # processed already under this assignment
        if i:
            low = records[0].offset
            if low < self.behind.get(tp, expected):
                self.behind[tp] = low
            records = records[i:]
            if not records:
                return (), None
        first = records[0].offset
        if first > expected:
            sought = self.sought.get(tp)
            if sought is None or sought[0] != expected:
                # A hole: do not process past it.  Read again from the expected offset.
                self.sought[tp] = (expected, first)
                self.holes_refetched += 1
                log.warning(
                    "partition %s[%d]: got offset %d, expected %d; seeking back to re-read",
                    tp.topic,
                    tp.partition,
                    first,
                    expected,
                )
                return (), expected
            bound = sought[1]
            if bound is not None and first > bound:
                return (), None  # read before the seek back: the re-read comes next
            # A fetch from `expected` itself answered with `first`: the offsets between
            # do not exist.
            self.gaps_accepted += 1
            log.info(
                "partition %s[%d]: offsets %d..%d do not exist (compacted, transaction "
                "markers or deleted); continuing at %d",
                tp.topic,
                tp.partition,
                expected,
                first - 1,
                first,
            )
        # Offsets within one fetched run increase; anything else is not trusted.
        last = first
        for k in range(1, len(records)):
            o = records[k].offset
            if o <= last:
                records = records[:k]
                break
            last = o
        self.sought.pop(tp, None)
        self.next[tp] = last + 1
        return records, None


@dataclass
class SourceBatch:
    records: list[Record]
    # partition -> [first offset, end offset) this batch completes
    spans: dict[TP, tuple[int, int]]
    epoch: int


# ---------------------------------------------------- run on faust's consumer thread
async def _starts(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, tuple[int | None, int, int]]:
    """(committed offset, current position, log start) per partition."""
    earliest = await consumer.beginning_offsets(tps)
    out: dict[TopicPartition, tuple[int | None, int, int]] = {}
    for tp in tps:
        committed = await consumer.committed(tp)
        position = await consumer.position(tp)
        out[tp] = (committed, position, earliest.get(tp, 0))
    return out


async def _seek(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    for tp, offset in offsets.items():
        consumer.seek(tp, offset)


class SourceReader:
    """Reads the source partitions assigned to a faust app (see the module docs)."""

    def __init__(
        self,
        app: faust.App,
        topics: Sequence[str],
        *,
        marks: Any = None,
        probe: TopicProbe | None = None,
    ) -> None:
        self.app = app
        self.topics = frozenset(topics)
        # async (topics, assigned, renewed) -> {(topic, partition): mark}; ``renewed``:
        # partitions whose topic was created again while they were read
        self._marks = marks
        self._probe = probe  # which incarnation of each topic is read (None: not asked)
        self._ids: dict[str, uuid.UUID | None] = {}  # topic ids when last established
        self._renewed: set[TP] = set()  # topics created again: read from their start
        self._short: dict[TP, int] = {}  # partition -> an end below next, asked about
        self.redeliveries = 0  # fall-backs found to be of the same topic (dropped)
        self.positions = Positions()
        self.paused: set[TP] = set()
        self.epoch = 0  # bumped by every revoke / assignment
        self._established = -1
        self._tps: frozenset[TopicPartition] = frozenset()
        self._handles: dict[TP, EventHandle] = {}
        self._last_error = 0.0
        self._reread: set[TP] = set()
        self.rereads = 0
        self._active_at = 0.0  # when a fetch last brought records (monotonic)
        self._full = False  # the last batch filled max_records: a backlog

    # ------------------------------------------------------------ faust hooks
    def install(self) -> None:
        """Before the app's consumer exists: keep faust's fetcher off the source topics."""
        faust_adapter.install_source_consumer(self.app, self.topics)
        receiver: Any = self._on_rebalance
        self.app.on_partitions_revoked.connect(receiver)
        self.app.on_partitions_assigned.connect(receiver)

    def uninstall(self) -> None:
        """Disconnect from the app's signals.  faust keeps their receivers in the
        App class's signal, for the life of the process: left connected, a stopped
        pipeline (its reader, processor and tables -- every dedup key) is never
        freed, and its receiver would be called for a later app that happens to get
        the same id()."""
        receiver: Any = self._on_rebalance
        self.app.on_partitions_revoked.disconnect(receiver)
        self.app.on_partitions_assigned.disconnect(receiver)

    async def _on_rebalance(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        self.epoch += 1

    @property
    def established(self) -> bool:
        """The current assignment's partitions are sought to where processing starts."""
        return self._established == self.epoch

    @property
    def _consumer(self) -> Any:
        return self.app.consumer

    def ready(self) -> bool:
        """The assignment is complete: table recovery done and the stream flowing."""
        return faust_adapter.assignment_settled(self.app)

    async def _call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(aiokafka consumer, *args)`` on faust's consumer thread."""
        return await faust_adapter.on_consumer_thread(self.app, fn, *args)

    def _assigned(self) -> frozenset[TopicPartition]:
        return frozenset(
            TopicPartition(tp.topic, tp.partition)
            for tp in self._consumer.assignment()
            if tp.topic in self.topics
        )

    # ------------------------------------------------------------ assignment
    async def _establish(self, epoch: int) -> bool:
        """Seek every assigned source partition to where processing must start."""
        tps = self._assigned()
        starts: dict[TP, int] = {}
        if tps:
            found = await self._call(_starts, sorted(tps))
            marks: dict[tuple[str, int], int] = {}
            renewed = {TP(tp.topic, tp.partition) for tp in tps} & self._renewed
            if self._marks is not None:
                marks = await self._marks(
                    sorted(self.topics), {(tp.topic, tp.partition) for tp in tps}, renewed
                )
            if self._probe is not None:
                self._ids = await self._probe.ids(self.topics)
            seek: dict[TopicPartition, int] = {}
            for tp, (committed, position, earliest) in found.items():
                start = committed if committed is not None else position
                mark = marks.get((tp.topic, tp.partition))
                if mark is not None and mark + 1 < start:
                    log.warning(
                        "partition %s[%d]: committed offset %d is past the sinks' "
                        "high-water mark %d; reading from %d",
                        tp.topic,
                        tp.partition,
                        start,
                        mark,
                        mark + 1,
                    )
                    start = mark + 1
                if tp in renewed:
                    start = earliest  # the committed offset is the old topic's
                start = max(start, earliest)
                seek[tp] = start
                starts[TP(tp.topic, tp.partition)] = start
            if self.epoch != epoch or not self.ready():
                return False
            await self._call(_seek, seek)
        if self.epoch != epoch or not self.ready():
            return False
        # faust's per-partition ack bookkeeping restarts with the assignment.
        faust_adapter.restart_acks(self.app, starts)
        self.positions.reset(starts)
        self._renewed -= set(starts)
        self._tps = tps
        self._established = epoch
        log.info(
            "pipeline source: reading %s",
            ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in sorted(starts.items()))
            or "nothing (no partitions assigned)",
        )
        return True

    # -------------------------------------------------------------- reading
    async def next_batch(
        self,
        max_records: int,
        linger: float = 0.0,
        busy: asyncio.Future[Any] | None = None,
    ) -> SourceBatch | None:
        """Records to process next (``None``: nothing now, or the assignment changed).

        Adaptive: waits (up to a second) for the first record, then takes what is
        buffered; while ``busy`` (the batch before, being processed) is not done,
        it goes on taking what arrives, so the consumer keeps fetching and the batch
        holds everything that came meanwhile -- batches grow only under load.  A
        ``linger`` (``batch.within``) holds the batch open at least that long after
        its first record.  Never more than ``max_records``."""
        if not self.ready():
            await asyncio.sleep(0.05)
            return None
        epoch = self.epoch
        if self._established != epoch or self._tps != self._assigned():
            try:
                if not await self._establish(epoch):
                    await asyncio.sleep(0.05)
                    return None
            except (asyncio.CancelledError, TopicResetError):
                raise  # marks of an earlier topic, and the policy says stop
            except Exception as exc:
                self._complain("cannot position the source partitions", exc)
                await asyncio.sleep(1.0)
                return None
        if self._reread:
            try:
                await self._rewind()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._complain("cannot seek a stalled partition back", exc)
        tps = frozenset(tp for tp in self._tps if tp not in self.paused)
        if not tps:
            await asyncio.sleep(0.1)
            return None
        records: list[Record] = []
        spans: dict[TP, tuple[int, int]] = {}
        loop = asyncio.get_running_loop()
        until: float | None = None  # the linger's end, once a record is here
        positions = self.positions
        while len(records) < max_records:
            last = False  # this take ends the batch, whatever it brings
            if until is None:
                timeout = FIRST_RECORD_WAIT_S
            else:
                if busy is not None and not busy.done():
                    await asyncio.wait([busy], timeout=BUSY_TAKE_S)
                if busy is not None and not busy.done():
                    timeout = 0.0  # the batch before is still processed: take what came
                else:
                    timeout = max(0.0, until - loop.time())
                    last = timeout == 0.0
            try:
                got = await self._call(
                    faust_adapter.fetch, tps, timeout, max_records - len(records), self._pace()
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._complain("fetching failed", exc)
                await asyncio.sleep(1.0)
                return None
            if self.epoch != epoch:
                return None
            if got:
                self._active_at = time.monotonic()
                if until is None:
                    until = loop.time() + linger
            elif until is None:
                break  # nothing for a while
            seek: dict[TopicPartition, int] = {}
            for atp, recs in got.items():
                tp = TP(atp.topic, atp.partition)
                start = positions.next.get(tp)
                run, back = positions.admit(tp, recs)
                if back is not None:
                    seek[atp] = back
                if not run or start is None:
                    continue
                first = spans[tp][0] if tp in spans else start
                spans[tp] = (first, positions.next[tp])
                self._to_records(tp, run, records)
            if seek:
                await self._call(_seek, seek)
            if last:
                break
        self._full = len(records) >= max_records
        behind = self._behind(tps)
        if behind and await self._recreated(behind, epoch):
            return None
        if not records and not spans:
            return None
        return SourceBatch(records, spans, epoch)

    def _pace(self) -> int:
        """How long the broker may hold an empty fetch, in ms: short while records
        keep coming, so one arriving meanwhile is not held back (Tansu looks at a
        held fetch again only part-way through its wait); long when idle, and in a
        backlog (the last batch was full): records are there to fetch, and the
        consumer's fetches of partitions that have none (each held the short wait,
        hundreds a second) took CPU from the batches."""
        if not self._full and time.monotonic() - self._active_at < faust_adapter.ACTIVE_FOR_S:
            return faust_adapter.FETCH_WAIT_ACTIVE_MS
        return faust_adapter.FETCH_MAX_WAIT_MS

    def _behind(self, tps: frozenset[TopicPartition]) -> dict[TP, int]:
        """Partitions read below what was admitted (Positions.fell_back), or whose
        end is below it (eventpipe.kafka.incarnation.ends_below)."""
        positions = self.positions
        behind = positions.fell_back()
        nexts = {
            tp: positions.next[tp]
            for tp in (TP(atp.topic, atp.partition) for atp in tps)
            if tp in positions.next
        }
        for tp, hw in ends_below(self._consumer.highwater, nexts, self._short).items():
            behind[tp] = min(hw, behind.get(tp, hw))
        return behind

    async def _recreated(self, behind: dict[TP, int], epoch: int) -> bool:
        """Partitions fell back below what was admitted, with no seek of ours there:
        a redelivery (dropped, as before), or the topic was deleted and created
        again while it was read (the consumer's position was reset to the new
        topic's offsets).  Told apart as at an assignment (eventpipe.kafka.incarnation):
        the topic's id now against the one read so far, else the partition's end
        offset below what was admitted.  A new topic voids this assignment: it is
        established again (bumping ``epoch``), where the marks' policy applies
        (``on_topic_reset``: stop, or read the new topic from its beginning)."""
        probe = self._probe
        if probe is None:
            return False
        positions = self.positions
        now: dict[str, uuid.UUID | None] = {}
        try:
            stale = await find_stale(
                probe,
                [
                    Mark(tp.topic, tp.partition, positions.next[tp] - 1, self._ids.get(tp.topic))
                    for tp in behind
                ],
            )
            renewed = {TP(*s.mark.tp) for s in stale}
            now = {s.mark.topic: s.topic_id for s in stale}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not known which: established again, from the committed offsets and
            # the marks (like a rebalance), rather than dropping on a guess.
            self._complain("cannot tell a redelivery from a re-created topic", exc)
            if self.epoch == epoch:
                self.epoch += 1
            return True
        for tp in sorted(behind):
            if tp not in renewed:
                self.redeliveries += 1
                log.debug(
                    "partition %s[%d]: offset %d read again (expected %d); dropped",
                    tp.topic,
                    tp.partition,
                    behind[tp],
                    positions.next.get(tp, -1),
                )
                continue
            log.warning(
                "partition %s[%d]: the consumer fell back to offset %d, below %d already "
                "read, and the topic is a new one (id %s, was %s): it was deleted and "
                "created again while the pipeline ran",
                tp.topic,
                tp.partition,
                behind[tp],
                positions.next.get(tp, -1),
                now.get(tp.topic),
                self._ids.get(tp.topic),
            )
        if not renewed:
            return False
        self._renewed |= renewed
        if self.epoch == epoch:
            self.epoch += 1
        return True

    def reread(self, tps: set[TP]) -> None:
        """Read these partitions again from the next offset to process, before the
        next fetch.  For a partition that has lag and does not move: its records
        were taken from the consumer's buffer but never reached the processor, and
        with no later record to show the hole, nothing else would read them again.
        (The one cause found, faust's fetcher draining them, is closed in
        :meth:`~eventpipe.pipelines.faust_adapter.SourceConsumer._getmany`; this is the
        net for any other.)"""
        self._reread |= tps

    async def _rewind(self) -> None:
        # Runs inside next_batch, between fetches: no fetched record is on its way
        # here, so what the next fetch returns was read from the offset sought to.
        tps, self._reread = self._reread, set()
        positions = self.positions
        offsets = {
            TopicPartition(tp.topic, tp.partition): positions.next[tp]
            for tp in tps
            if tp in positions.next
        }
        if not offsets:
            return
        stood = await self._call(faust_adapter.rewind, offsets)
        for atp, (before, held) in stood.items():
            offset = offsets[atp]
            tp = TP(atp.topic, atp.partition)
            if before == offset:
                # Nothing was taken unprocessed: only slow (a sink holding a batch).
                log.info(
                    "partition %s[%d]: stalled at offset %d, where the consumer stands "
                    "too (buffered: %s)",
                    tp.topic,
                    tp.partition,
                    offset,
                    held,
                )
                continue
            # From here, a fetch from `offset` that answers with a later offset
            # proves the offsets between do not exist (Positions.admit).
            positions.sought[tp] = (offset, None)
            self.rereads += 1
            log.warning(
                "partition %s[%d]: stalled at offset %d (the consumer stood at %s); "
                "reading it again from %d",
                tp.topic,
                tp.partition,
                offset,
                before,
                offset,
            )

    def _to_records(self, tp: TP, run: Sequence[Any], out: list[Record]) -> None:
        handle = self._handles.get(tp)
        if handle is None:
            handle = self._handles[tp] = EventHandle(tp)
        topic, partition = tp.topic, tp.partition
        n = len(out)
        for r in run:
            headers = r.headers
            # Positional: half the cost of keywords on this per-record path.
            out.append(
                Record(
                    n,
                    topic,
                    partition,
                    r.offset,
                    r.timestamp,
                    r.key,
                    r.value,
                    headers if isinstance(headers, list) else list(headers),
                    handle,
                )
            )
            n += 1

    def _complain(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        level = logging.WARNING if now - self._last_error > 30 else logging.DEBUG
        self._last_error = now
        log.log(level, "pipeline source: %s: %r", what, exc)

    # ----------------------------------------------------- processing a batch
    @contextlib.contextmanager
    def in_flight(self, batch: SourceBatch) -> Iterator[bool]:
        """Hold ``batch`` as in flight for faust (a revoke waits for it).  Yields
        whether it may be processed: read under the current, complete assignment."""
        ok = batch.epoch == self.epoch and self.ready()
        if not ok and batch.epoch == self.epoch:
            # Dropped unprocessed: whatever was read after it is void too, and the
            # partitions are sought again before anything more is processed.
            self.epoch += 1
        with faust_adapter.in_flight(self.app, hold=ok):
            yield ok

    def ack(self, batch: SourceBatch) -> None:
        """The batch is done: let faust commit its offsets."""
        faust_adapter.ack_offsets(self.app, batch.spans)

    def pause(self, tps: set[TP]) -> None:
        self.paused |= tps

    def resume(self, tps: set[TP]) -> None:
        self.paused -= tps
