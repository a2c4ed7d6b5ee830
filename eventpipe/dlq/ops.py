"""The DLQ operations behind `eventpipe dlq` and the admin API: select, find,
stats, replay and discard."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from eventpipe.dlq import payloads, store
from eventpipe.dlq.query import Filters, parse_ref
from eventpipe.dlq.reader import Entry, read_snapshot
from eventpipe.envelope.json import from_structured_dict
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.errors import EventpipeError, PermanentError
from eventpipe.kafka.admin import TopicAdmin
from eventpipe.kafka.incarnation import RETIRED, Mark, TopicProbe, apply_policy, find_stale
from eventpipe.publisher import PublishBatchError, Publisher
from eventpipe.settings import Settings

CHUNK = 1000  # records per publish call and per COPY of their replay rows


class DlqError(PermanentError):
    pass


def pipeline_dlq_topic(settings: Settings, pipeline: str) -> str:
    for p in settings.pipelines:
        if p.get("name") == pipeline:
            dl = p.get("dead_letter") or {}
            return str(dl.get("topic") or f"{pipeline}.dlq")
    return f"{pipeline}.dlq"


async def resolve_topics(
    settings: Settings, pipeline: str | None, topics: Sequence[str] | None
) -> list[str]:
    """Explicit topics, else the pipeline's DLQ topic, else every ``*.dlq`` topic."""
    async with TopicAdmin(settings.kafka) as admin:
        existing = await admin.list_topics()
    if topics:
        missing = [t for t in topics if t not in existing]
        if missing:
            raise DlqError(f"--topic: no such topic(s): {', '.join(missing)}")
        return list(topics)
    if pipeline:
        t = pipeline_dlq_topic(settings, pipeline)
        if t not in existing:
            raise DlqError(
                f"--pipeline {pipeline}: its dead-letter topic {t!r} does not exist "
                "(nothing was dead-lettered yet, or pass --topic)"
            )
        return [t]
    return sorted(t for t in existing if t.endswith(".dlq"))


@dataclass
class Dlq:
    settings: Settings
    pool: AsyncConnectionPool

    async def ledgers(self, topics: Sequence[str]) -> Ledgers:
        """What was replayed and discarded of the DLQ topics there now.  Rows kept for
        an earlier incarnation of a topic (deleted and created again: new records at
        the same offsets) are never taken for its records: with
        ``kafka.on_topic_reset: fail`` they stop the operation (TopicResetError), with
        ``reset`` they are retired (kept, matching no topic)."""
        async with self.pool.connection() as conn:
            replayed = await store.replayed(conn, topics)
            discarded = await store.discarded(conn, topics)
        high: dict[tuple[str, int, uuid.UUID | None], int] = {}
        for (t, p, o), i in [*replayed.items(), *discarded.items()]:
            if i != RETIRED:
                high[(t, p, i)] = max(o, high.get((t, p, i), -1))
        async with TopicAdmin(self.settings.kafka) as admin:
            probe = TopicProbe(admin, self.settings.kafka)
            stale = await find_stale(probe, [Mark(t, p, o, i) for (t, p, i), o in high.items()])
            ids = await probe.ids(topics)
        apply_policy(
            stale,
            self.settings.kafka.on_topic_reset,
            owner="the dead-letter replay / discard ledger",
            option="kafka.on_topic_reset: reset (eventpipe dlq ... --on-topic-reset reset)",
        )
        gone = {(s.mark.topic, s.mark.partition, s.mark.topic_id) for s in stale}
        if gone:
            async with self.pool.connection() as conn:
                await store.retire(conn, sorted(gone, key=str))

        def current(rows: dict[store.Ref, uuid.UUID | None]) -> set[store.Ref]:
            return {r for r, i in rows.items() if i != RETIRED and (r[0], r[1], i) not in gone}

        return Ledgers(current(replayed), current(discarded), ids)

    async def select(
        self, topics: Sequence[str], filters: Filters, ledgers: Ledgers | None = None
    ) -> list[Entry]:
        """``ledgers``: from :meth:`ledgers` of the same topics, when the caller has
        them already (the console shows which records were replayed)."""
        out: list[Entry] = []
        async with contextlib.aclosing(self._matching(topics, filters, ledgers)) as found:
            async for e in found:
                out.append(e)
                if filters.limit is not None and len(out) >= filters.limit:
                    break
        return out

    async def newest(
        self, topics: Sequence[str], filters: Filters, n: int, ledgers: Ledgers | None = None
    ) -> Summary:
        """The ``n`` newest records that match (newest first), and counts over all that
        match; holds at most ``n`` records however long the topics are."""
        summary = Summary()
        heap: list[tuple[float, int, Entry]] = []
        async for e in self._matching(topics, filters, ledgers):
            summary.total += 1
            summary.by_pipeline[e.letter.pipeline] += 1
            summary.by_stage[e.letter.stage] += 1
            summary.by_exception[e.letter.exception_class] += 1
            item = (e.failed_at.timestamp(), summary.total, e)
            if len(heap) < n:
                heapq.heappush(heap, item)
            else:
                heapq.heappushpop(heap, item)
        summary.entries = [e for *_, e in sorted(heap, reverse=True)]
        return summary

    async def _matching(
        self, topics: Sequence[str], filters: Filters, ledgers: Ledgers | None
    ) -> AsyncGenerator[Entry, None]:
        gone = (ledgers or await self.ledgers(topics)).discarded
        start_ms = int(filters.since.timestamp() * 1000) - 60_000 if filters.since else None
        async for read in read_snapshot(self.settings.kafka, topics, start_ms=start_ms):
            e = await payloads.resolve(self.pool, read)
            if filters.matches(e, gone):
                yield e

    async def find(self, topics: Sequence[str], ref: str) -> Entry | None:
        exact = parse_ref(ref)
        if exact is not None:
            topics = [exact[0]]
        async for e in read_snapshot(self.settings.kafka, topics):
            if exact is not None:
                if (e.topic, e.partition, e.offset) == exact:
                    return await payloads.resolve(self.pool, e)
            elif e.event_id == ref:
                return await payloads.resolve(self.pool, e)
        return None

    async def history(self, ref: store.Ref) -> list[store.HistoryRow]:
        """The replays and discards of one record (after :meth:`ledgers` of its topic
        retired what belonged to an earlier incarnation)."""
        async with self.pool.connection() as conn:
            return await store.history(conn, ref)

    async def discard(self, entries: Sequence[Entry], reason: str, who: str | None = None) -> int:
        if not reason.strip():
            raise DlqError("--reason is required and must not be empty")
        async with TopicAdmin(self.settings.kafka) as admin:
            ids = await admin.topic_ids({e.topic for e in entries})
        async with self.pool.connection() as conn:
            return await store.record_discards(
                conn,
                [((e.topic, e.partition, e.offset), e.event_id) for e in entries],
                reason,
                ids,
                who,
            )

    async def replay(
        self,
        topics: Sequence[str],
        entries: Sequence[Entry],
        *,
        to: str | None = None,
        patch: str | None = None,
        dry_run: bool = False,
        rate: float | None = None,
        force: bool = False,
        progress: Callable[[int], None] | None = None,
        who: str | None = None,
        reason: str | None = None,
    ) -> ReplayReport:
        """``who`` / ``reason``: recorded with each replayed record."""
        program = _compile_patch(patch)
        report = ReplayReport()
        ledgers = await self.ledgers(topics)
        if not force:
            done = ledgers.replayed
            todo = [e for e in entries if (e.topic, e.partition, e.offset) not in done]
            report.skipped_replayed = len(entries) - len(todo)
        else:
            todo = list(entries)
        planned: list[tuple[Entry, str, KafkaMessage]] = []
        for e in todo:
            try:
                target = to or e.letter.origin.topic
                if not target:
                    raise DlqError(
                        f"{e.ref}: the record has no original topic (stage "
                        f"{e.letter.stage}); pass --to TOPIC"
                    )
                planned.append((e, target, _message(e, program)))
            except EventpipeError as exc:
                report.failed.append((e.ref, str(exc)))
        if dry_run:
            report.planned = [
                {"ref": e.ref, "event_id": e.event_id, "target": target, "value": _preview(m.value)}
                for e, target, m in planned
            ]
            return report
        started = time.monotonic()
        # With a rate, chunks are about a second of records, so pacing stays smooth
        # and an interrupted replay has recorded nearly everything it sent.
        size = max(1, min(CHUNK, int(rate))) if rate else CHUNK
        async with Publisher(self.settings) as publisher:
            for i in range(0, len(planned), size):
                chunk = planned[i : i + size]
                await self._replay_chunk(
                    publisher, chunk, patch, force, report, ledgers.ids, (who, reason)
                )
                if progress is not None:
                    progress(len(chunk))
                if rate:
                    ahead = (report.replayed + len(report.failed)) / rate - (
                        time.monotonic() - started
                    )
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        return report

    async def _replay_chunk(
        self,
        publisher: Publisher,
        chunk: Sequence[tuple[Entry, str, KafkaMessage]],
        patch: str | None,
        force: bool,
        report: ReplayReport,
        topic_ids: dict[str, uuid.UUID | None],
        by: tuple[str | None, str | None] = (None, None),
    ) -> None:
        by_target: dict[str, list[tuple[Entry, KafkaMessage]]] = {}
        for e, target, m in chunk:
            by_target.setdefault(target, []).append((e, m))
        rows: list[store.ReplayRow] = []
        for target, items in by_target.items():
            ids = [e.event_id or e.ref for e, _ in items]
            try:
                acks = await publisher.publish_messages(target, [m for _, m in items], ids)
                done = dict(enumerate(acks))
            except PublishBatchError as exc:
                done = exc.acked
                for idx, err in exc.failed.items():
                    report.failed.append((items[idx][0].ref, str(err)))
            for idx, ack in done.items():
                e = items[idx][0]
                rows.append(
                    store.ReplayRow(
                        (e.topic, e.partition, e.offset),
                        e.event_id,
                        target,
                        ack.partition,
                        ack.offset,
                        patch,
                        force,
                        topic_ids.get(e.topic),
                        *by,
                    )
                )
        # Recorded after the broker acknowledged: a crash in between replays the
        # chunk again with the same CloudEvent ids, which consumers deduplicate.
        if rows:
            async with self.pool.connection() as conn:
                await store.record_replays(conn, rows)
        report.replayed += len(rows)


@dataclass
class Ledgers:
    replayed: set[store.Ref]
    discarded: set[store.Ref]
    ids: dict[str, uuid.UUID | None]  # the DLQ topics' ids now


@dataclass
class Summary:
    """What :meth:`Dlq.newest` found."""

    entries: list[Entry] = field(default_factory=list)
    total: int = 0
    by_pipeline: Counter[str] = field(default_factory=Counter)
    by_stage: Counter[str] = field(default_factory=Counter)
    by_exception: Counter[str] = field(default_factory=Counter)


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped_replayed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    planned: list[dict[str, Any]] = field(default_factory=list)


def stats(entries: Sequence[Entry]) -> dict[str, Any]:
    if not entries:
        return {
            "total": 0,
            "by_pipeline": {},
            "by_stage": {},
            "by_exception": {},
            "oldest": None,
            "newest": None,
        }
    times = sorted(e.failed_at for e in entries)
    return {
        "total": len(entries),
        "by_pipeline": dict(Counter(e.letter.pipeline for e in entries).most_common()),
        "by_stage": dict(Counter(e.letter.stage for e in entries).most_common()),
        "by_exception": dict(Counter(e.letter.exception_class for e in entries).most_common()),
        "oldest": times[0].isoformat().replace("+00:00", "Z"),
        "newest": times[-1].isoformat().replace("+00:00", "Z"),
    }


def _compile_patch(patch: str | None) -> Any:
    if not patch:
        return None
    from eventpipe.transforms.jq_engine import JqCompileError, compile_program

    try:
        return compile_program(patch, "jaq")
    except JqCompileError as exc:
        raise DlqError(f"--patch does not compile: {exc}") from exc


def patch_event(event: dict[str, Any], patch: str, ref: str = "the record") -> dict[str, Any]:
    """``event`` (a structured CloudEvent) with the jq ``patch`` applied, by the rules
    of a patched replay (it must output an event with the same id and source);
    :class:`DlqError` says why not.  What the console's preview shows."""
    program = _compile_patch(patch)
    if program is None:
        return event
    out = _apply(event, program, ref)
    try:
        from_structured_dict(out)
    except EventpipeError as exc:
        raise DlqError(f"{ref}: the patched event is not valid: {exc}") from exc
    return out


def _message(e: Entry, program: Any) -> KafkaMessage:
    d = e.letter
    if d.payload_ref is not None and d.value is None:
        raise DlqError(
            f"{e.ref}: its value (ref {d.payload_ref}) is no longer in eventpipe.dlq_payloads"
        )
    if d.cut is not None:
        raise DlqError(
            f"{e.ref}: fields of it were cut to fit the broker ({d.cut}; the originals are "
            "in eventpipe.dlq_payloads under those refs): it cannot be replayed as it is"
        )
    if program is None:
        return KafkaMessage(d.key, d.value, list(d.headers))
    if e.event is None:
        raise DlqError(f"{e.ref}: the value is not a CloudEvent, so --patch cannot apply")
    ev = from_structured_dict(_apply(e.event, program, e.ref))
    m = to_kafka(ev)
    return KafkaMessage(d.key, m.value, m.headers)


def _apply(event: dict[str, Any], program: Any, ref: str) -> dict[str, Any]:
    from eventpipe.transforms.jq_engine import NO_OUTPUT

    try:
        out = program.first(event)
    except Exception as exc:
        raise DlqError(f"{ref}: --patch failed: {exc}") from exc
    if out is NO_OUTPUT or not isinstance(out, dict):
        raise DlqError(f"{ref}: --patch must output the event object")
    if out.get("id") != event.get("id") or out.get("source") != event.get("source"):
        raise DlqError(
            f"{ref}: --patch must keep the event's id and source (downstream deduplicates on them)"
        )
    return out


def _preview(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value[:200].decode("utf-8", "replace")
