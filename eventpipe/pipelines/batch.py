"""One batch of consumed records through a pipeline.

decode -> dedup check -> validate_input -> steps -> validate_output ->
dead letters of those stages -> sinks (each with the retry policy and circuit
breaker) -> dead letters of the sinks -> dedup marks.

Nothing here returns before every record is either written by every sink or
stored in the dead-letter topic (acknowledged by the broker), so the caller
may then mark the records' offsets as consumed.  A failure affects only its
own record (poison records never block a partition); a sink that is down
(:class:`~eventpipe.sink.SinkUnavailableError`, for the whole
write or for one record's request) holds those records with backoff, without
using up their attempts, its partitions paused while the breaker is open,
instead of dead-lettering everything (:mod:`.outcome` sorts a write's results).
A sink that raises for the batch as a whole names no bad record: that is
retried while retriable, then, as Kafka Connect's ``errors.tolerance: none``,
stops the pipeline (:class:`SinkFailedError`, nothing of the batch
acknowledged); ``tolerance: all`` dead-letters the batch instead.  A record a
sink fails on its own is dead-lettered when a class says its data is bad (or a
retriable error outlasted ``retry.max_attempts``); an error no class explains
for it stops the pipeline the same way (``tolerance: all``: dead-lettered).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eventpipe import metrics, telemetry
from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import from_kafka
from eventpipe.errors import (
    EventpipeError,
    classify,
    error_class_name,
    is_bad_record,
    is_retriable,
)
from eventpipe.kafka.incarnation import TopicResetError
from eventpipe.sink import (
    DeliveryItem,
    PipelineSink,
    SinkUnavailableError,
    retry_after_of,
)
from eventpipe.status import Activity
from eventpipe.trace_hook import TraceHook
from eventpipe.transforms import Chain, ValidateStep

from .aggregate import Aggregator
from .dedup_table import DedupTable
from .outcome import WriteOutcome, probe, sort_write
from .retry import RetryPolicy

log = logging.getLogger("eventpipe.pipelines")
_STEP_INDEX = re.compile(r"^steps\[(\d+)\]")


def _unless_bad_record(exc: BaseException) -> None:
    """Raise ``exc`` unless a class says its record's data is bad (a decode error, a
    jq runtime error, a schema violation): only those are dead-lettered.  A bug (no
    class explains it) or a retriable error leaves the batch unacknowledged, and the
    pipeline stops (exit 3) instead of dead-lettering good records."""
    if not is_bad_record(exc):
        raise exc


class SinkFailedError(EventpipeError):
    """A sink failed a whole batch with an error that names no bad record, or one
    record with an error no class explains, and the pipeline's ``errors.tolerance``
    is ``none``: the pipeline stops."""


@dataclass(slots=True)
class Record:
    """A consumed record and what became of it.  (SourceReader._to_records passes
    the first nine fields by position.)"""

    index: int
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    handle: Any = None  # the faust event (current event for table writes), or None
    event: CloudEvent | None = None
    outputs: list[CloudEvent] = field(default_factory=list)
    dead: bool = False
    duplicate: bool = False
    dedup_key: str | None = None
    failure: tuple[str, str | None] | None = None  # (stage, step) when dead-lettered


@dataclass
class Stage:
    """A run of steps: a fused Chain, or a stateful step (aggregate / dedup)."""

    name: str
    chain: Chain | None = None
    aggregator: Aggregator | None = None
    dedup: tuple[DedupTable, Any] | None = None  # (table, compiled key program)
    step_offset: int = 0


class NullContext(AbstractContextManager[None]):
    def __exit__(self, *exc: object) -> None:
        return None


def _no_event(_: Any) -> AbstractContextManager[None]:
    return NullContext()


class BatchProcessor:
    def __init__(
        self,
        *,
        pipeline: str,
        stages: list[Stage],
        sinks: list[PipelineSink],
        dlq: DeadLetterWriter,
        retry: RetryPolicy,
        validate_input: ValidateStep | None = None,
        validate_output: ValidateStep | None = None,
        dedup: DedupTable | None = None,
        tolerance: str = "none",
        use_event: Callable[[Any], AbstractContextManager[None]] = _no_event,
        pause: Callable[[Iterable[tuple[str, int]]], None] | None = None,
        resume: Callable[[Iterable[tuple[str, int]]], None] | None = None,
        trace: TraceHook | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.stages = stages
        self.sinks = sinks
        self.dlq = dlq
        self.retry = retry
        self.validate_input = validate_input
        self.validate_output = validate_output
        self.dedup = dedup
        self.tolerance = tolerance
        self.use_event = use_event
        self.pause = pause
        self.resume = resume
        self.stopping = False
        self.trace = trace  # told what became of each record, once per batch
        self._sink_names = [s.name for s in sinks]
        self.activity = Activity()  # records in, output events out, the last error
        self._m_in = metrics.PIPELINE_EVENTS_IN.labels(pipeline=pipeline)
        self._m_dup = metrics.PIPELINE_DUPLICATES.labels(pipeline=pipeline)
        self._m_batch = metrics.PIPELINE_BATCH_SIZE.labels(pipeline=pipeline)
        self._span_attributes = {"eventpipe.pipeline": pipeline}
        self._m_step = {
            s: metrics.PIPELINE_STEP_SECONDS.labels(pipeline=pipeline, step=s)
            for s in ["decode", "validate_input", "validate_output", *(st.name for st in stages)]
        }

    # ------------------------------------------------------------- the batch
    async def process(self, records: list[Record]) -> None:
        self._m_in.inc(len(records))
        self.activity.events_in.mark(len(records))
        self._m_batch.observe(len(records))
        letters: list[DeadLetter] = []
        t = time.perf_counter()
        self._decode(records, letters)
        t = self._took("decode", t)
        contexts = (telemetry.of_event(r.event) if r.event else None for r in records)
        with telemetry.consumer_span(f"process {self.pipeline}", contexts, self._span_attributes):
            await self._process(records, letters, t)

    async def _process(self, records: list[Record], letters: list[DeadLetter], t: float) -> None:
        self._check_duplicates(records)
        if self.validate_input is not None:
            self._validate(records, self.validate_input, letters, inputs=True)
            t = self._took("validate_input", t)
        for rec in records:
            if rec.event is not None and not rec.dead and not rec.duplicate:
                rec.outputs = [rec.event]
        for stage in self.stages:
            with telemetry.span(f"step {stage.name}", attributes={"eventpipe.step": stage.name}):
                self._run_stage(stage, records, letters)
            t = self._took(stage.name, t)
        telemetry.keep_trace((r.event, r.outputs) for r in records if r.outputs and r.event)
        if self.validate_output is not None:
            self._validate(records, self.validate_output, letters, inputs=False)
            t = self._took("validate_output", t)
        # Dead letters of the stages before the sinks are stored first: an exactly-once
        # sink may mark offsets past them, after which they would not be read again.
        await self._write_dead_letters(letters)
        for sink in self.sinks:
            if sink.exactly_once:
                # Every record, with no events when it is dead-lettered, a duplicate or
                # filtered: the sink's marks cover the whole batch, so what follows the
                # last delivered record is not read (and dead-lettered) again.
                live = records
            else:
                live = [
                    r for r in records if not r.dead and not r.duplicate and r.event is not None
                ]
                if not live:
                    continue
            with telemetry.span(
                f"deliver {sink.name}", attributes=self._sink_attributes(sink, live)
            ):
                await self._deliver(sink, live, records)
        self._mark_done(records)
        if self.trace is not None:
            self.trace.read(self.pipeline, records, self._sink_names)
        self.activity.events_out.mark(
            sum(len(r.outputs) for r in records if not r.dead and not r.duplicate)
        )

    def _sink_attributes(self, sink: PipelineSink, live: list[Record]) -> dict[str, Any] | None:
        if not telemetry.enabled():
            return None
        return {
            "eventpipe.pipeline": self.pipeline,
            "eventpipe.sink": sink.name,
            "messaging.batch.message_count": len(live),
        }

    def _took(self, step: str, t0: float) -> float:
        now = time.perf_counter()
        self._m_step[step].observe(now - t0)
        return now

    # ------------------------------------------------------------ the stages
    def _decode(self, records: list[Record], letters: list[DeadLetter]) -> None:
        for rec in records:
            try:
                rec.event = from_kafka(rec.key, rec.value, rec.headers)
            except Exception as exc:
                _unless_bad_record(exc)
                letters.append(self._letter(rec, exc, "decode"))

    def _check_duplicates(self, records: list[Record]) -> None:
        dedup = self.dedup
        if dedup is None:
            return
        seen: set[str] = set()
        for rec in records:
            ev = rec.event
            if ev is None or rec.dead:
                continue
            key = dedup.key(ev.source, ev.id)
            rec.dedup_key = key
            if key in seen or dedup.seen(key):
                rec.duplicate = True
                self._m_dup.inc()
            seen.add(key)

    def _validate(
        self, records: list[Record], step: ValidateStep, letters: list[DeadLetter], *, inputs: bool
    ) -> None:
        name = "validate_input" if inputs else "validate_output"
        for rec in records:
            if rec.dead or rec.duplicate or rec.event is None:
                continue
            try:
                for ev in [rec.event] if inputs else rec.outputs:
                    step.process(ev)
            except Exception as exc:
                _unless_bad_record(exc)
                letters.append(self._letter(rec, exc, "validate", name))

    def _run_stage(self, stage: Stage, records: list[Record], letters: list[DeadLetter]) -> None:
        live = [r for r in records if r.outputs and not r.dead]
        if not live:
            return
        if stage.chain is not None:
            flat: list[CloudEvent] = []
            owners: list[Record] = []
            for rec in live:
                for ev in rec.outputs:
                    flat.append(ev)
                    owners.append(rec)
                rec.outputs = []
            result = stage.chain.run_batch(flat)
            for n, (rec, outs) in enumerate(zip(owners, result.outputs, strict=True)):
                if rec.dead:
                    continue
                exc = result.failed.get(n)
                if exc is not None:
                    _unless_bad_record(exc)
                    step = getattr(exc, "step", None)
                    letters.append(
                        self._letter(
                            rec,
                            exc,
                            getattr(exc, "stage", "transform"),
                            self._step_name(step, stage.step_offset),
                        )
                    )
                    continue
                rec.outputs.extend(outs)
            return
        for rec in live:
            produced: list[CloudEvent] = []
            try:
                for ev in rec.outputs:
                    produced.extend(self._stateful(stage, rec, ev))
            except Exception as exc:
                _unless_bad_record(exc)
                letters.append(self._letter(rec, exc, "transform", stage.name))
                continue
            rec.outputs = produced

    def _stateful(self, stage: Stage, rec: Record, ev: CloudEvent) -> list[CloudEvent]:
        if stage.aggregator is not None:
            return stage.aggregator.process(ev, rec.handle, rec.partition, rec.offset)
        assert stage.dedup is not None
        table, program = stage.dedup
        from eventpipe.transforms.event_form import to_event_form
        from eventpipe.transforms.jq_engine import NO_OUTPUT

        v = program.first(to_event_form(ev))
        if v is NO_OUTPUT or v is None:
            return [ev]  # no key: nothing to dedup on
        key = v if isinstance(v, str) else repr(v)
        if table.seen(key):
            return []
        with self.use_event(rec.handle):
            table.mark(key, rec.partition)
        return [ev]

    @staticmethod
    def _step_name(step: str | None, offset: int) -> str | None:
        if step is None or not offset:
            return step
        return _STEP_INDEX.sub(lambda m: f"steps[{int(m.group(1)) + offset}]", step, 1)

    # ----------------------------------------------------------------- sinks
    async def _deliver(self, sink: PipelineSink, live: list[Record], records: list[Record]) -> None:
        label = sink.name
        m_out = metrics.PIPELINE_EVENTS_OUT.labels(pipeline=self.pipeline, sink=label)
        m_time = metrics.PIPELINE_SINK_BATCH_SECONDS.labels(pipeline=self.pipeline, sink=label)
        by_index = {r.index: r for r in live}
        attempts: dict[int, int] = {}
        first_failed: dict[int, datetime] = {}
        pending = [
            DeliveryItem(r.index, r.outputs, r.topic, r.partition, r.offset, key=r.key)
            for r in live
        ]

        async def before_commit(failed: dict[int, BaseException]) -> None:
            # raised inside the sink's transaction: it rolls back, marks and all
            self._stop_on_unexplained(sink, [(by_index.get(i), e) for i, e in failed.items()])
            letters = []
            for index, exc in failed.items():
                rec = by_index.get(index)
                if rec is None or rec.dead or is_retriable(exc):
                    continue
                sink.activity.failed(exc)
                letters.append(self._letter(rec, exc, "sink", label, attempts.get(index, 0) + 1))
            await self._write_dead_letters(letters)
            sink.activity.dead_letters["sink"] += len(letters)

        holds = 0  # writes in a row that left records held (destination unavailable)
        queue = pending
        while queue:
            wait = sink.breaker.wait_time()
            if wait > 0:
                await self._hold_open(sink, queue, wait)
            pending = probe(queue) if sink.breaker.state == "half_open" else queue
            t0 = time.perf_counter()
            try:
                failed = await sink.deliver(pending, before_commit=before_commit)
            except SinkUnavailableError as exc:  # the sink as a whole could not write
                failed = dict.fromkeys([it.index for it in pending], exc)
            except (TopicResetError, SinkFailedError):
                raise  # marks of another incarnation of the topic; before_commit's stop
            except Exception as exc:  # the batch as a whole: a bug, or a retriable failure
                sink.activity.failed(exc)
                self.activity.failed(exc)
                log.warning("pipeline %s sink %s failed a batch: %r", self.pipeline, label, exc)
                tries = 1 + max(attempts.get(it.index, 0) for it in pending)
                if self.tolerance == "none" and not (
                    is_retriable(exc) and tries < self.retry.max_attempts
                ):
                    raise SinkFailedError(
                        f"pipeline {self.pipeline}: sink {label} failed a batch of "
                        f"{len(pending)} record(s) with {type(exc).__name__}: {exc} (after "
                        f"{tries} attempt(s)); it names no bad record, so nothing of the "
                        "batch is acknowledged and the pipeline stops (errors.tolerance: "
                        "none); set errors: {tolerance: all} to dead-letter such batches"
                    ) from exc
                failed = {it.index: exc for it in pending}
            m_time.observe(time.perf_counter() - t0)
            w = sort_write(pending, failed)
            opened = self._judge_write(sink, w)
            delivered = sum(len(it.events) for it in w.delivered)
            m_out.inc(delivered)
            sink.activity.events_out.mark(delivered)
            delays = [0.0]
            if w.held:
                holds += 1
                delays.append(self.retry.delay(holds, w.retry_after()))
                self._held(sink, w, delays[-1], opened)
            else:
                holds = 0
            self._stop_on_unexplained(sink, [(by_index[it.index], err) for it, err in w.failed])
            now = datetime.now(UTC)
            letters: list[DeadLetter] = []
            again: list[tuple[int, float | None]] = []  # (attempts, Retry-After) to retry
            for it, err in w.failed:
                rec = by_index[it.index]
                if rec.dead:  # dead-lettered by the sink's before_commit
                    continue
                self._count_error(label, err)
                sink.activity.failed(err)
                n = attempts[it.index] = attempts.get(it.index, 0) + 1
                first_failed.setdefault(it.index, now)
                if is_retriable(err) and n < self.retry.max_attempts:
                    again.append((n, retry_after_of(err)))
                else:
                    letters.append(self._letter(rec, err, "sink", label, n, first_failed[it.index]))
            await self._write_dead_letters(letters)
            sink.activity.dead_letters["sink"] += len(letters)
            if again:
                hints = [a for _, a in again if a]
                delays.append(self.retry.delay(max(n for n, _ in again), max(hints, default=None)))
            done = {it.index for it in w.delivered} | {i for i, r in by_index.items() if r.dead}
            queue = [it for it in queue if it.index not in done]
            if queue and not opened:
                await asyncio.sleep(max(delays))

    def _stop_on_unexplained(
        self, sink: PipelineSink, failed: Iterable[tuple[Record | None, BaseException]]
    ) -> None:
        """With ``errors.tolerance: none``, raise :class:`SinkFailedError` for the first
        record a sink failed with an error no class explains (a bug, not bad data):
        it is not dead-lettered, and nothing of the batch is acknowledged."""
        if self.tolerance != "none":
            return
        for rec, exc in failed:
            if rec is None or rec.dead or classify(exc) is not None:
                continue
            sink.activity.failed(exc)
            self.activity.failed(exc)
            raise SinkFailedError(
                f"pipeline {self.pipeline}: sink {sink.name} failed record "
                f"{rec.topic}[{rec.partition}]@{rec.offset} with {error_class_name(exc)}: "
                f"{exc}, an error no class explains (a bug, not bad data); it is not "
                "dead-lettered, nothing of the batch is acknowledged and the pipeline stops "
                "(errors.tolerance: none): fix the sink, or set errors: {tolerance: all} "
                "to dead-letter such records"
            ) from exc

    def _judge_write(self, sink: PipelineSink, w: WriteOutcome) -> bool:
        """Tell the breaker how the write went; True when this opened it."""
        if not w.tried:
            return False
        if w.unavailable:
            return sink.breaker.record_failure()
        sink.breaker.record_success()
        metrics.PIPELINE_SINK_BREAKER_OPEN.labels(pipeline=self.pipeline, sink=sink.name).set(0)
        return False

    def _held(self, sink: PipelineSink, w: WriteOutcome, delay: float, opened: bool) -> None:
        label = sink.name
        for _, exc in w.held:
            self._count_error(label, exc)
        sink.activity.failed(w.held[0][1])
        log.warning(
            "pipeline %s sink %s unavailable for %d of %d record(s) (%s); holding them, "
            "retry in %.2fs%s",
            self.pipeline,
            label,
            len(w.held),
            w.tried,
            w.held[0][1],
            delay,
            " (circuit open)" if opened else "",
        )

    async def _hold_open(
        self, sink: PipelineSink, pending: Sequence[DeliveryItem], wait: float
    ) -> None:
        """The breaker is open: pause the batch's partitions until a probe may go."""
        tps = {(it.topic or "", it.partition or 0) for it in pending}
        metrics.PIPELINE_SINK_BREAKER_OPEN.labels(pipeline=self.pipeline, sink=sink.name).set(1)
        if self.pause is not None:
            self.pause(tps)
        try:
            await asyncio.sleep(wait)
        finally:
            if self.resume is not None:
                self.resume(tps)

    def _count_error(self, sink: str, exc: BaseException) -> None:
        metrics.PIPELINE_SINK_ERRORS.labels(
            pipeline=self.pipeline, sink=sink, error_class=error_class_name(exc)
        ).inc()

    # ---------------------------------------------------------- dead letters
    def _letter(
        self,
        rec: Record,
        exc: BaseException,
        stage: str,
        step: str | None = None,
        attempts: int = 1,
        first_failed_at: datetime | None = None,
    ) -> DeadLetter:
        rec.dead = True
        rec.outputs = []
        rec.failure = (stage, step)
        return DeadLetter.from_exception(
            exc,
            key=rec.key,
            value=rec.value,
            headers=rec.headers,
            pipeline=self.pipeline,
            stage=stage,
            step=step,
            origin=Origin(rec.topic, rec.partition, rec.offset, rec.timestamp_ms),
            attempts=attempts,
            first_failed_at=first_failed_at,
        )

    async def _write_dead_letters(self, letters: list[DeadLetter]) -> None:
        """Store dead letters; while the broker does not take them, hold (never drop)."""
        if not letters:
            return
        failures = 0
        while True:
            try:
                await self.dlq.write(letters)
                break
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                failures += 1
                delay = self.retry.delay(failures)
                log.warning(
                    "pipeline %s: dead-letter topic %s not writable (%s); retry in %.2fs",
                    self.pipeline,
                    self.dlq.topic,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
        for d in letters:
            metrics.PIPELINE_DEAD_LETTERS.labels(pipeline=self.pipeline, stage=d.stage).inc()
            log.info(
                "pipeline %s: dead-lettered %s[%s]@%s at %s%s: %s",
                self.pipeline,
                d.origin.topic,
                d.origin.partition,
                d.origin.offset,
                d.stage,
                f" ({d.step})" if d.step else "",
                d.exception_message[:200],
            )

    # ------------------------------------------------------------ dedup marks
    def _mark_done(self, records: list[Record]) -> None:
        dedup = self.dedup
        if dedup is None:
            return
        last: dict[int, Any] = {}
        for rec in records:
            if rec.dead or rec.duplicate or rec.dedup_key is None:
                continue
            with self.use_event(rec.handle):
                dedup.mark(rec.dedup_key, rec.partition)
            last[rec.partition] = rec.handle
        if last:
            dedup.expire(last)
