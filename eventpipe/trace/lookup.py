"""What happened to event X: the trace index, the records themselves, the ledgers.

1. Candidates: the index rows since ``since`` whose fingerprints hold X's
   (``trace_produced``: where a producer of the service wrote it;
   ``trace_read``: where a pipeline read it, for records written by producers
   outside the service, or where a pipeline turned another event into X).
2. Each candidate record is fetched from Kafka at its exact offset and kept only
   if it is X (same id, and same source when one is given): a fingerprint
   collision costs a fetch, never a wrong answer.
3. For each record found: how it came in (the record's own attributes: webhook,
   CDC position and transaction, publish API, dead letter), and what every
   pipeline that read it did (``trace_read``).
4. The ledgers by id: DLQ replays and discards (with who and why where migration
   0016 keeps them; a replay's target record is fetched and traced too), the
   webhook dedup window, backfill jobs and what they delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from eventpipe.dlq.record import PREFIX as DLQ_PREFIX
from eventpipe.dlq.record import DeadLetter
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.event import format_time
from eventpipe.envelope.kafka import from_kafka
from eventpipe.errors import EventpipeError
from eventpipe.settings import Settings
from eventpipe.trace_hook import DEAD, DELIVERED, OUTCOMES, fingerprint, positions

from . import DEFAULT_SINCE as DEFAULT_SINCE  # defined where the command's parser reads it
from .fetch import Fetched, Place, fetch_records

log = logging.getLogger(__name__)
MAX_CANDIDATES = 1000
MAX_OUTPUTS = 20  # output ids of one read whose places are looked up
HIDDEN_EXTENSIONS = frozenset({"whsignature"})


@dataclass
class PipelineRead:
    """One pipeline's processing of one record."""

    pipeline: str
    at: datetime
    outcome: str  # delivered | filtered | duplicate | dead-lettered
    sinks: list[str]  # the pipeline's sinks at the time
    delivered_to: list[str]
    stage: str | None = None
    step: str | None = None
    outputs: list[str] | None = None  # output ids, where they differ from the input's
    output_places: list[Found] = field(default_factory=list)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "pipeline": self.pipeline,
            "at": _iso(self.at),
            "outcome": self.outcome,
            "sinks": self.sinks,
            "delivered_to": self.delivered_to,
        }
        if self.stage is not None:
            doc["dead_letter"] = {"stage": self.stage, "step": self.step}
        if self.outputs is not None:
            doc["outputs"] = self.outputs
            doc["output_records"] = [p.to_doc() for p in self.output_places]
        return doc


@dataclass
class Found:
    """A record that holds the event."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime
    via: str | None  # the producer path, from the index; None: written outside the service
    event: dict[str, Any]
    came_in: dict[str, Any]
    dead_letter: dict[str, Any] | None = None
    reads: list[PipelineRead] = field(default_factory=list)
    replays: list[dict[str, Any]] = field(default_factory=list)
    discards: list[dict[str, Any]] = field(default_factory=list)

    @property
    def place(self) -> Place:
        return (self.topic, self.partition, self.offset)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": _iso(self.timestamp),
            "via": self.via,
            "event": self.event,
            "came_in": self.came_in,
        }
        if self.dead_letter is not None:
            doc["dead_letter"] = self.dead_letter
            doc["replays"] = self.replays
            doc["discards"] = self.discards
        doc["pipelines"] = [r.to_doc() for r in self.reads]
        return doc


@dataclass
class Trace:
    event_id: str
    source: str | None
    since: datetime
    records: list[Found] = field(default_factory=list)
    derived_from: list[dict[str, Any]] = field(default_factory=list)
    webhook_dedup: list[dict[str, Any]] = field(default_factory=list)
    backfills: list[dict[str, Any]] = field(default_factory=list)
    looked: dict[str, Any] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.records or self.derived_from)

    def to_doc(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "source": self.source,
            "found": self.found,
            "records": [r.to_doc() for r in self.records],
            "derived_from": self.derived_from,
            "webhook_dedup": self.webhook_dedup,
            "backfills": self.backfills,
            "looked": self.looked,
        }


class TraceIndexMissingError(EventpipeError):
    """The database has no trace index tables (migration 0017 not applied)."""


# ------------------------------------------------------------------ the query
async def trace_event(
    settings: Settings,
    pool: AsyncConnectionPool,
    event_id: str,
    *,
    since: datetime,
    source: str | None = None,
) -> Trace:
    """Everything the index, Kafka and the ledgers know about ``event_id`` (of
    ``source``, when given) since ``since``."""
    trace = Trace(event_id, source, since)
    fp = fingerprint(event_id)
    async with pool.connection() as conn:
        await _check_tables(conn)
        produced = await _produced_candidates(conn, fp, since)
        read_hits = await _read_candidates(conn, fp, event_id, since)
        trace.looked = await _looked(conn, since)
    candidates: dict[Place, str | None] = dict(produced)
    for place in read_hits.inputs:
        candidates.setdefault(place, None)
    if len(candidates) > MAX_CANDIDATES:
        log.warning(
            "trace %s: %d candidate records, checking the newest %d",
            event_id,
            len(candidates),
            MAX_CANDIDATES,
        )
        candidates = dict(list(candidates.items())[-MAX_CANDIDATES:])
    fetched = await fetch_records(settings.kafka, [*candidates, *read_hits.derived])
    for place, via in candidates.items():
        found = _found(settings, fetched.get(place), via, event_id, source)
        if found is not None:
            trace.records.append(found)
    trace.derived_from = _derived(read_hits, fetched)
    async with pool.connection() as conn:
        await _ledgers(settings, conn, trace)
        for found in trace.records:
            found.reads = await _reads_at(conn, found.place, since)
        await _output_places(settings, conn, trace, since)
        trace.webhook_dedup = await _webhook_dedup(settings, conn, trace)
        trace.backfills = await _backfills(settings, conn, trace)
    trace.records.sort(key=lambda f: (f.timestamp, f.topic, f.partition, f.offset))
    trace.looked.update(
        candidates=len(candidates) + len(read_hits.derived),
        checked_in_kafka=sum(1 for p in candidates if fetched.get(p) is not None),
        since=_iso(since),
    )
    return trace


async def _check_tables(conn: AsyncConnection) -> None:
    cur = await conn.execute("select to_regclass('eventpipe.trace_produced') is not null")
    row = await cur.fetchone()
    if not row or not row[0]:
        raise TraceIndexMissingError(
            "the database has no trace index (eventpipe.trace_produced); run "
            "`eventpipe migrate` and let the service index new events (trace.enabled)"
        )


async def _produced_candidates(
    conn: AsyncConnection, fp: bytes, since: datetime
) -> dict[Place, str]:
    cur = await conn.execute(
        "select topic, partition, via, batches, fps from eventpipe.trace_produced "
        "where at >= %s and position(%s::bytea in fps) > 0 order by at",
        (since, fp),
    )
    out: dict[Place, str] = {}
    for topic, partition, via, batches, fps in await cur.fetchall():
        offsets = _batch_offsets(batches)
        for i in positions(fps, fp):
            if i < len(offsets):
                out[(topic, partition, offsets[i])] = via
    return out


def _batch_offsets(batches: Sequence[int]) -> list[int]:
    out: list[int] = []
    for k in range(0, len(batches) - 1, 2):
        base, count = batches[k], batches[k + 1]
        out.extend(range(base, base + count))
    return out


@dataclass
class _ReadHits:
    inputs: list[Place] = field(default_factory=list)
    # places of inputs a pipeline turned into the event: (place, pipeline, at)
    derived: dict[Place, tuple[str, datetime]] = field(default_factory=dict)


async def _read_candidates(
    conn: AsyncConnection, fp: bytes, event_id: str, since: datetime
) -> _ReadHits:
    cur = await conn.execute(
        "select at, pipeline, topic, partition, first_offset, offsets, fps, notes "
        "from eventpipe.trace_read where at >= %s and (position(%s::bytea in fps) > 0 "
        "or (notes is not null and jsonb_path_exists(notes, "
        "'$.*.outputs[*] ? (@ == $id)', jsonb_build_object('id', %s::text))))",
        (since, fp, event_id),
    )
    hits = _ReadHits()
    for at, pipeline, topic, partition, first, offsets, fps, notes in await cur.fetchall():
        for i in positions(fps, fp):
            hits.inputs.append((topic, partition, offsets[i] if offsets else first + i))
        for off, note in (notes or {}).items():
            if event_id in (note.get("outputs") or ()):
                hits.derived[(topic, partition, int(off))] = (pipeline, at)
    return hits


async def _looked(conn: AsyncConnection, since: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table in ("trace_produced", "trace_read"):
        cur = await conn.execute(
            f"select count(*), min(at) from eventpipe.{table} where at >= %s", (since,)
        )
        n, oldest = await cur.fetchone() or (0, None)
        out[table] = {"rows": n, "oldest": _iso(oldest) if oldest else None}
    return out


# ------------------------------------------------------------ the records
def _decode(fetched: Fetched) -> tuple[CloudEvent | None, DeadLetter | None, dict[str, str]]:
    """The record's event (None when it does not decode), its dead letter (when it
    is one), and its ce_* headers."""
    letter = None
    key, value, headers = fetched.key, fetched.value, fetched.headers
    if any(k.startswith(DLQ_PREFIX) for k, _ in headers):
        letter = DeadLetter.from_kafka(key, value, headers)
        key, value, headers = letter.key, letter.value, letter.headers
    ce = {k[3:]: v.decode("utf-8", "replace") for k, v in headers if k.startswith("ce_")}
    try:
        event = from_kafka(key, value, headers)
    except EventpipeError:
        event = None
    return event, letter, ce


def _found(
    settings: Settings,
    fetched: Fetched | None,
    via: str | None,
    event_id: str,
    source: str | None,
) -> Found | None:
    if fetched is None:
        return None
    event, letter, ce = _decode(fetched)
    if event is not None:
        attrs = {k: v for k, v in event.attributes().items() if k not in HIDDEN_EXTENSIONS}
    else:
        attrs = {k: v for k, v in ce.items() if k not in HIDDEN_EXTENSIONS}
    if attrs.get("id") != event_id or (source is not None and attrs.get("source") != source):
        return None
    found = Found(
        fetched.topic,
        fetched.partition,
        fetched.offset,
        datetime.fromtimestamp(fetched.timestamp_ms / 1000, UTC),
        via,
        attrs,
        _came_in(settings, event, attrs, letter, via, fetched),
    )
    if letter is not None:
        found.dead_letter = _letter_doc(letter)
    return found


def _came_in(
    settings: Settings,
    event: CloudEvent | None,
    attrs: dict[str, Any],
    letter: DeadLetter | None,
    via: str | None,
    fetched: Fetched,
) -> dict[str, Any]:
    written = _iso(datetime.fromtimestamp(fetched.timestamp_ms / 1000, UTC))
    data = event.data if event is not None else None
    block = data.get("source") if isinstance(data, dict) else None
    if letter is not None:
        return {"kind": "dead-letter", "pipeline": letter.pipeline or None, "written": written}
    if via is not None and via.startswith("sink:"):
        return {"kind": "pipeline-output", "sink": via[5:], "written": written}
    if "cdclsn" in attrs or (isinstance(block, dict) and "lsn" in block and "txId" in block):
        cdc: dict[str, Any] = {"kind": "cdc", "lsn": attrs.get("cdclsn"), "written": written}
        if isinstance(block, dict):
            cdc.update(
                lsn=cdc["lsn"] or block.get("lsn"),
                tx_id=block.get("txId"),
                table=".".join(str(block[k]) for k in ("schema", "table") if block.get(k)),
                committed=_ms(block.get("ts_ms")),
                snapshot=block.get("snapshot"),
            )
        if isinstance(data, dict) and "op" in data:
            cdc["op"] = data["op"]
        return cdc
    if "whdigest" in attrs or via in ("webhook", "webhook-spool"):
        return {
            "kind": "webhook",
            "source": _webhook_name(settings, str(attrs.get("source", ""))),
            # a JSON webhook's event time is its receipt; the record's timestamp is
            # when it was produced (spooled requests: when the relay sent them)
            "received": attrs.get("time") or written,
            "delivery_id": attrs.get("id"),
            "spooled": via == "webhook-spool",
            "written": written,
        }
    if via == "publish-api":
        return {"kind": "publish-api", "written": written}
    if via is not None and via.startswith("source:"):
        return {"kind": "source", "source": via[7:], "written": written}
    if via is None:
        return {
            "kind": "external",
            "note": "not written by the service's producers (another Kafka client, or "
            "`eventpipe publish`); found through a pipeline that read it",
            "written": written,
        }
    return {"kind": via, "written": written}


def _webhook_sources(settings: Settings) -> dict[str, str]:
    """Webhook source name -> the CloudEvent source its events carry.  A ``sources:``
    entry is a typed entry in the service's config, a mapping as a file holds it."""
    out: dict[str, str] = {}
    for entry in settings.sources:
        if isinstance(entry, Mapping):
            kind, name, event = entry.get("type"), entry.get("name"), entry.get("event")
            src = event.get("source") if isinstance(event, Mapping) else None
        else:
            kind, name = getattr(entry, "type", None), getattr(entry, "name", None)
            src = getattr(getattr(entry, "event", None), "source", None)
        if kind == "webhook" and name:
            out[str(name)] = str(src or f"/webhooks/{name}")
    return out


def _webhook_name(settings: Settings, source: str) -> str | None:
    for name, src in _webhook_sources(settings).items():
        if src == source:
            return name
    return source.removeprefix("/webhooks/") if source.startswith("/webhooks/") else None


def _letter_doc(d: DeadLetter) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pipeline": d.pipeline or None,
        "stage": d.stage,
        "step": d.step,
        "exception": {"class": d.exception_class, "message": d.exception_message},
        "attempts": d.attempts,
        "failed_at": _iso(d.failed_at) if d.failed_at else None,
        "origin": {
            "topic": d.origin.topic,
            "partition": d.origin.partition,
            "offset": d.origin.offset,
        },
    }
    if d.http_status is not None:
        doc["http"] = {"status": d.http_status}
    return doc


def _derived(hits: _ReadHits, fetched: dict[Place, Fetched | None]) -> list[dict[str, Any]]:
    out = []
    for place, (pipeline, at) in hits.derived.items():
        rec = fetched.get(place)
        event = _decode(rec)[0] if rec is not None else None
        out.append(
            {
                "pipeline": pipeline,
                "at": _iso(at),
                "input": {
                    "topic": place[0],
                    "partition": place[1],
                    "offset": place[2],
                    "event_id": event.id if event is not None else None,
                    "source": event.source if event is not None else None,
                },
            }
        )
    return out


# ------------------------------------------------------------ the pipelines
async def _reads_at(conn: AsyncConnection, place: Place, since: datetime) -> list[PipelineRead]:
    topic, partition, offset = place
    cur = await conn.execute(
        "select at, pipeline, first_offset, offsets, outcomes, notes, sinks "
        "from eventpipe.trace_read where topic = %s and partition = %s "
        "and first_offset <= %s and last_offset >= %s and at >= %s order by at",
        (topic, partition, offset, offset, since),
    )
    out = []
    for at, pipeline, first, offsets, outcomes, notes, sinks in await cur.fetchall():
        try:
            i = offsets.index(offset) if offsets else offset - first
        except ValueError:
            continue  # a gap of this row: the pipeline never saw the offset
        code = outcomes[i]
        note = (notes or {}).get(str(offset), {})
        read = PipelineRead(pipeline, at, OUTCOMES.get(code, code), list(sinks), [])
        if code == DELIVERED:
            read.delivered_to = list(sinks)
        elif code == DEAD:
            dl = note.get("dead_letter") or {}
            read.stage, read.step = dl.get("stage"), dl.get("step")
            if read.stage == "sink" and read.step in sinks:  # the sinks before it wrote it
                read.delivered_to = list(sinks[: list(sinks).index(read.step)])
        if "outputs" in note:
            read.outputs = list(note["outputs"])
        out.append(read)
    return out


async def _output_places(
    settings: Settings, conn: AsyncConnection, trace: Trace, since: datetime
) -> None:
    """Where the outputs with other ids landed (topic sinks write them through the
    indexed producer)."""
    reads = [r for f in trace.records for r in f.reads if r.outputs]
    ids = list(dict.fromkeys(i for r in reads for i in r.outputs or ()))[:MAX_OUTPUTS]
    if not ids:
        return
    wanted: dict[str, dict[Place, str]] = {}
    for out_id in ids:
        wanted[out_id] = await _produced_candidates(conn, fingerprint(out_id), since)
    fetched = await fetch_records(settings.kafka, [p for c in wanted.values() for p in c])
    for read in reads:
        for out_id in read.outputs or ():
            for place, via in wanted.get(out_id, {}).items():
                if not via.startswith(f"sink:{read.pipeline}/"):
                    continue
                found = _found(settings, fetched.get(place), via, out_id, None)
                if found is not None:
                    read.output_places.append(found)


# ------------------------------------------------------------- the ledgers
async def _ledgers(settings: Settings, conn: AsyncConnection, trace: Trace) -> None:
    """Replays and discards of the event's dead letters; a replay's target record
    is fetched and added (the replaying process does not index what it writes)."""
    letters = [f for f in trace.records if f.dead_letter is not None]
    refs = [f.place for f in letters]
    by_place = {f.place: f for f in letters}
    replays = await _ledger_rows(conn, "dlq_replays", trace.event_id, refs)
    discards = await _ledger_rows(conn, "dlq_discards", trace.event_id, refs)
    targets: dict[Place, dict[str, Any]] = {}
    for row in replays:
        owner = by_place.get((row["dlq_topic"], row["partition"], row["offset"]))
        doc = _ledger_doc(row, "replayed_at")
        doc["target"] = {
            "topic": row.get("target_topic"),
            "partition": row.get("target_partition"),
            "offset": row.get("target_offset"),
        }
        if owner is not None:
            owner.replays.append(doc)
        if row.get("target_partition") is not None and row.get("target_offset") is not None:
            targets[(row["target_topic"], row["target_partition"], row["target_offset"])] = doc
    for row in discards:
        owner = by_place.get((row["dlq_topic"], row["partition"], row["offset"]))
        if owner is not None:
            owner.discards.append(_ledger_doc(row, "discarded_at"))
    known = {f.place: f for f in trace.records}
    new = [p for p in targets if p not in known]
    fetched = await fetch_records(settings.kafka, new) if new else {}
    for place, doc in targets.items():
        found = known.get(place) or _found(
            settings, fetched.get(place), "dlq-replay", trace.event_id, trace.source
        )
        if found is None:
            continue
        if place not in known:
            trace.records.append(found)
        # found through the pipelines that read it (the replaying process does not
        # index what it writes) or fetched here: it is the replay either way
        found.via = found.via or "dlq-replay"
        found.came_in = {
            "kind": "replay",
            "dead_letter": doc["dead_letter"],
            "written": found.came_in.get("written"),
        }
    trace.looked["ledgers"] = {"dlq_replays": len(replays), "dlq_discards": len(discards)}


async def _ledger_rows(
    conn: AsyncConnection, table: str, event_id: str, refs: Sequence[Place]
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"select * from eventpipe.{table} l where l.event_id = %s or "
        '(l.dlq_topic, l.partition, l."offset") in (select * from unnest(%s::text[], '
        "%s::int[], %s::int8[]))",
        (event_id, [r[0] for r in refs], [r[1] for r in refs], [r[2] for r in refs]),
    )
    return list(await cur.fetchall())


def _ledger_doc(row: dict[str, Any], when: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "dead_letter": f"{row['dlq_topic']}:{row['partition']}:{row['offset']}",
        "at": _iso(row[when]),
    }
    for k in ("who", "reason", "patch", "forced"):  # who / reason: migration 0016
        if row.get(k) is not None:
            doc[k] = row[k]
    return doc


async def _webhook_dedup(
    settings: Settings, conn: AsyncConnection, trace: Trace
) -> list[dict[str, Any]]:
    hooks = [f for f in trace.records if f.came_in.get("kind") == "webhook"]
    if not hooks:
        return []
    names = {f.came_in["source"] for f in hooks if f.came_in.get("source")}
    names |= set(_webhook_sources(settings))
    keys = {trace.event_id} | {f"{f.event.get('source')} {trace.event_id}" for f in hooks}
    cur = await conn.execute(
        "select source, delivery_id, seen_at from eventpipe.webhook_dedup "
        "where source = any(%s) and delivery_id = any(%s)",
        (sorted(names), sorted(keys)),
    )
    return [
        {"source": s, "delivery_id": d, "seen_at": _iso(at)} for s, d, at in await cur.fetchall()
    ]


async def _backfills(
    settings: Settings, conn: AsyncConnection, trace: Trace
) -> list[dict[str, Any]]:
    """Backfill jobs of a pipeline that read (or reads) the event's topic, whose
    range holds the event, and what they delivered of it."""
    originals = [f for f in trace.records if f.dead_letter is None]
    if not originals:
        return []
    topics = {f.topic for f in originals}
    pipelines = {r.pipeline for f in originals for r in f.reads}
    for p in settings.pipelines:
        source = p.get("source") if isinstance(p, Mapping) else None
        if isinstance(source, Mapping) and topics & set(source.get("topics") or ()):
            pipelines.add(str(p.get("name")))
    if not pipelines:
        return []
    first = min(f.timestamp for f in originals)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "select id, pipeline, mode, source, from_time, to_time, status, created_at "
        "from eventpipe.backfill_jobs where pipeline = any(%s) and from_time <= %s "
        "and to_time >= %s order by created_at",
        (sorted(pipelines), first, first),
    )
    jobs = await cur.fetchall()
    labels = sorted({f"{r.pipeline}/{s}" for f in originals for r in f.reads for s in r.sinks})
    sources = sorted({str(f.event.get("source")) for f in originals})
    delivered: dict[str, list[dict[str, Any]]] = {}
    if labels:
        await cur.execute(
            "select sink, job_id, delivered_at from eventpipe.backfill_delivered "
            "where sink = any(%s) and source = any(%s) and id = %s",
            (labels, sources, trace.event_id),
        )
        for row in await cur.fetchall():
            delivered.setdefault(row["job_id"], []).append(
                {"sink": row["sink"], "at": _iso(row["delivered_at"])}
            )
    return [
        {
            "job": j["id"],
            "pipeline": j["pipeline"],
            "mode": j["mode"],
            "read": j["source"],
            "from": _iso(j["from_time"]),
            "to": _iso(j["to_time"]),
            "status": j["status"],
            "started": _iso(j["created_at"]),
            "delivered": delivered.get(j["id"], []),
        }
        for j in jobs
    ]


# ---------------------------------------------------------------- helpers
def _iso(t: datetime | None) -> str | None:
    return format_time(t) if t is not None else None


def _ms(v: Any) -> str | None:
    if not isinstance(v, int | float):
        return None
    return _iso(datetime.fromtimestamp(v / 1000, UTC))
