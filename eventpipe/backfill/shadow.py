"""Shadow mode's comparison: what this pipeline definition produced for the range
(on ``<pipeline>.shadow``) against what the live pipeline's topic sinks produced
for the same source events.

Events are matched on (source, id).  Steps keep the input's id (several outputs
of one input get ``<id>:<n>``, aggregate updates ``<id>:<window>``), so a live
output belongs to the range when its (source, id), or its id without the last
``:suffix``, is one of the range's input events or one of the shadow outputs.

* missing: the live pipeline produced it, the shadow run did not;
* extra: the shadow run produced it, the live pipeline did not (or not yet);
* changed: both did, and the events differ (type, subject, time, data,
  datacontenttype, dataschema, extensions; trace context is ignored).

The live topics are read from ``--from`` (less a minute for clock skew) to
their end: the live pipeline wrote its outputs after their inputs' times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventpipe.envelope.json import to_structured_dict
from eventpipe.envelope.kafka import from_kafka
from eventpipe.errors import EventpipeError
from eventpipe.pipelines.spec import SinkEntry
from eventpipe.settings import KafkaSettings

from .job import Job
from .sinks import H_JOB, H_ROUTE
from .topic_reader import ms, read_range

IGNORED = frozenset({"traceparent", "tracestate", "routetopic"})
SKEW_MS = 60_000
Key = tuple[str, str]


@dataclass
class Comparison:
    live_topics: list[str]
    shadow: int = 0
    live: int = 0
    same: int = 0
    missing: int = 0
    extra: int = 0
    changed: int = 0
    examples: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"missing": [], "extra": [], "changed": []}
    )
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "live_topics": self.live_topics,
            "shadow": self.shadow,
            "live": self.live,
            "same": self.same,
            "missing": self.missing,
            "extra": self.extra,
            "changed": self.changed,
            "examples": self.examples,
            "note": self.note,
        }


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in IGNORED}


def differences(live: dict[str, Any], shadow: dict[str, Any]) -> list[dict[str, Any]]:
    """Which attributes differ (for ``data`` objects, which of its keys)."""
    out: list[dict[str, Any]] = []
    a, b = comparable(live), comparable(shadow)
    for k in sorted(set(a) | set(b)):
        if a.get(k) == b.get(k):
            continue
        if k == "data" and isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            da, db = a[k], b[k]
            for dk in sorted(set(da) | set(db)):
                if da.get(dk) != db.get(dk):
                    out.append({"field": f"data.{dk}", "live": da.get(dk), "shadow": db.get(dk)})
            continue
        out.append({"field": k, "live": a.get(k), "shadow": b.get(k)})
    return out


def _brief(doc: dict[str, Any]) -> dict[str, Any]:
    """An example small enough for a report."""
    data = doc.get("data")
    text = orjson.dumps(data).decode() if data is not None else None
    if text is not None and len(text) > 300:
        data = text[:300] + "..."
    return {"id": doc.get("id"), "source": doc.get("source"), "type": doc.get("type"), "data": data}


def base_id(event_id: str) -> str:
    head, sep, _ = event_id.rpartition(":")
    return head if sep else event_id


async def read_shadow(
    kafka: KafkaSettings, topic: str, job: Job
) -> tuple[dict[Key, dict[str, Any]], set[str]]:
    """The job's shadow outputs by (source, id), and the topics routes chose."""
    since = ms(job.created_at) - SKEW_MS if job.created_at else 0
    want = job.id.encode()
    out: dict[Key, dict[str, Any]] = {}
    routes: set[str] = set()
    async for r in read_range(kafka, [topic], since):
        headers = list(r.headers or ())
        h = dict(headers)
        if h.get(H_JOB) != want:
            continue
        if H_ROUTE in h:
            routes.add(h[H_ROUTE].decode())
        try:
            ev = from_kafka(r.key, r.value, headers)
        except EventpipeError:
            continue
        out[(ev.source, ev.id)] = to_structured_dict(ev)
    return out, routes


async def read_inputs(kafka: KafkaSettings, topics: list[str], job: Job) -> set[Key]:
    """(source, id) of the source events in the job's range."""
    start, end = ms(job.start), ms(job.end)
    keys: set[Key] = set()
    async for r in read_range(kafka, topics, start, end):
        if not start <= r.timestamp < end:
            continue
        try:
            ev = from_kafka(r.key, r.value, list(r.headers or ()))
        except EventpipeError:
            continue
        keys.add((ev.source, ev.id))
    return keys


def live_topics_of(entries: Iterable[SinkEntry], routes: set[str]) -> list[str]:
    topics = set(routes)
    for e in entries:
        if e.kind == "topic" and getattr(e.config, "topic", None):
            topics.add(e.config.topic)
    return sorted(topics)


async def compare(
    kafka: KafkaSettings,
    *,
    job: Job,
    shadow_topic: str,
    source_topics: list[str],
    entries: list[SinkEntry],
    existing: set[str],
    limit: int = 5,
    has_tables: bool = False,
) -> Comparison:
    """``has_tables``: the sinks' tables are compared too (:mod:`.shadow_tables`)."""
    if not any(e.kind == "topic" for e in entries):
        result = Comparison(live_topics=[])
        if not has_tables:
            result.note = (
                "the pipeline has no topic or table sink, so there is no live output to "
                f"compare with; the shadow output is on {shadow_topic}"
            )
        return result
    shadow, routes = await read_shadow(kafka, shadow_topic, job)
    topics = [t for t in live_topics_of(entries, routes) if t in existing]
    result = Comparison(live_topics=topics, shadow=len(shadow))
    if job.source != "topic":
        result.note = (
            "rows read from tables are new events (op r) with new ids, so they cannot be "
            "matched with the live output; the shadow output is on " + shadow_topic
        )
        return result
    inputs = await read_inputs(kafka, source_topics, job)
    live: dict[Key, dict[str, Any]] = {}
    if topics:
        async for r in read_range(kafka, topics, ms(job.start) - SKEW_MS):
            try:
                ev = from_kafka(r.key, r.value, list(r.headers or ()))
            except EventpipeError:
                continue
            key = (ev.source, ev.id)
            if key in shadow or key in inputs or (ev.source, base_id(ev.id)) in inputs:
                live[key] = to_structured_dict(ev)
    result.live = len(live)
    ex = result.examples
    for key in sorted(live.keys() - shadow.keys()):
        result.missing += 1
        if len(ex["missing"]) < limit:
            ex["missing"].append(_brief(live[key]))
    for key in sorted(shadow.keys() - live.keys()):
        result.extra += 1
        if len(ex["extra"]) < limit:
            ex["extra"].append(_brief(shadow[key]))
    for key in sorted(shadow.keys() & live.keys()):
        diff = differences(live[key], shadow[key])
        if not diff:
            result.same += 1
            continue
        result.changed += 1
        if len(ex["changed"]) < limit:
            ex["changed"].append({"id": key[1], "source": key[0], "differences": diff[:10]})
    return result
