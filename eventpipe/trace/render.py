"""A trace as a rich tree (``eventpipe trace``), drawn from its JSON document, the
same one ``--json`` and ``GET /v1/trace/{event_id}`` give."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.tree import Tree


def _ref(doc: dict[str, Any]) -> str:
    return f"{doc['topic']}[{doc['partition']}]@{doc['offset']}"


def render(doc: dict[str, Any]) -> Tree:
    src = f" (source {escape(str(doc['source']))})" if doc.get("source") else ""
    tree = Tree(f"[bold]event {escape(doc['event_id'])}[/]{src}")
    for rec in doc["records"]:
        _record(tree, rec)
    for d in doc["derived_from"]:
        i = d["input"]
        tree.add(
            f"made by pipeline [bold]{escape(d['pipeline'])}[/] at {d['at']} from event "
            f"{escape(str(i['event_id']))} at {_ref(i)}"
        )
    for w in doc["webhook_dedup"]:
        tree.add(
            f"webhook dedup: delivery id {escape(w['delivery_id'])} of source "
            f"{escape(w['source'])} recorded (last seen {w['seen_at']}); a retry within the "
            "window is answered as a duplicate, not stored again"
        )
    for b in doc["backfills"]:
        node = tree.add(
            f"backfill {escape(b['job'])} of pipeline {escape(b['pipeline'])} ({b['mode']}, "
            f"{b['status']}) covered it: {b['from']} .. {b['to']}"
        )
        for d in b["delivered"]:
            node.add(f"delivered to {escape(d['sink'])} at {d['at']}")
    return tree


def _record(tree: Tree, rec: dict[str, Any]) -> None:
    ev = rec["event"]
    head = f"[bold cyan]{escape(_ref(rec))}[/]  {rec['timestamp']}  {_came_in(rec['came_in'])}"
    node = tree.add(head)
    node.add(f"[dim]type {escape(str(ev.get('type')))}  source {escape(str(ev.get('source')))}[/]")
    dl = rec.get("dead_letter")
    if dl is not None:
        o = dl["origin"]
        where = f"{o['topic']}[{o['partition']}]@{o['offset']}" if o.get("topic") else "a request"
        step = f" ({escape(str(dl['step']))})" if dl.get("step") else ""
        exc = dl["exception"]
        node.add(
            f"[red]dead letter of {escape(str(dl['pipeline']))}: {dl['stage']}{step}, read at "
            f"{escape(where)}: {escape(exc['class'])}: {escape(exc['message'][:300])}[/]"
        )
        for r in rec["replays"]:
            t = r["target"]
            who = f" by {escape(str(r['who']))}" if r.get("who") else ""
            why = f" ({escape(str(r['reason']))})" if r.get("reason") else ""
            node.add(f"[green]replayed {r['at']}{who}{why} -> {escape(_ref(t))}[/]")
        for d in rec["discards"]:
            who = f" by {escape(str(d['who']))}" if d.get("who") else ""
            node.add(f"discarded {d['at']}{who}: {escape(str(d.get('reason')))}")
        if not rec["replays"] and not rec["discards"]:
            node.add("[yellow]not replayed or discarded[/]")
    for p in rec["pipelines"]:
        _read(node, p)


def _came_in(c: dict[str, Any]) -> str:
    kind = c["kind"]
    if kind == "webhook":
        spooled = ", spooled while the broker was down" if c.get("spooled") else ""
        return (
            f"came in: webhook {escape(str(c.get('source')))}, received {c['received']}, "
            f"delivery id {escape(str(c['delivery_id']))}{spooled}"
        )
    if kind == "cdc":
        parts = [
            f"table {c['table']}" if c.get("table") else None,
            f"op {c['op']}" if c.get("op") else None,
        ]
        parts += [f"lsn {c['lsn']}", f"tx {c.get('tx_id')}", f"committed {c.get('committed')}"]
        return "came in: CDC " + ", ".join(escape(str(p)) for p in parts if p)
    if kind == "publish-api":
        return "came in: POST /v1/topics/{topic}/events"
    if kind == "dead-letter":
        return "dead letter"
    if kind == "replay":
        return f"came in: replay of dead letter {escape(str(c.get('dead_letter')))}"
    if kind == "pipeline-output":
        return f"written by sink {escape(c['sink'])}"
    if kind == "source":
        return f"written by source {escape(c['source'])}"
    if kind == "external":
        return "written outside the service (found through a pipeline that read it)"
    return f"written by {escape(kind)}"


def _read(node: Tree, p: dict[str, Any]) -> None:
    outcome = p["outcome"]
    color = {"delivered": "green", "filtered": "yellow", "duplicate": "dim"}.get(outcome, "red")
    text = f"pipeline [bold]{escape(p['pipeline'])}[/] [{color}]{outcome}[/]"
    dl = p.get("dead_letter")
    if dl is not None:
        step = f" ({escape(str(dl['step']))})" if dl.get("step") else ""
        text += f" at {dl['stage']}{step}"
    if p["delivered_to"]:
        text += " -> " + ", ".join(escape(s) for s in p["delivered_to"])
    text += f"  [dim]{p['at']}[/]"
    sub = node.add(text)
    if "outputs" in p:
        sub.add("as " + ", ".join(escape(i) for i in p["outputs"]))
        for o in p.get("output_records", []):
            sub.add(f"{escape(o['event']['id'])} landed at {escape(_ref(o))}")


def not_found(doc: dict[str, Any]) -> str:
    looked = doc["looked"]
    rows = ", ".join(
        f"{looked[t]['rows']:,} {t} row(s)" for t in ("trace_produced", "trace_read") if t in looked
    )
    ledgers = looked.get("ledgers", {})
    src = f" of source {doc['source']}" if doc.get("source") else ""
    return (
        f"event {doc['event_id']}{src} not found.\n"
        f"looked in: {rows} written since {looked.get('since')}; "
        f"{looked.get('candidates', 0)} candidate record(s) checked in Kafka "
        f"({looked.get('checked_in_kafka', 0)} still there), none was the event; "
        f"{ledgers.get('dlq_replays', 0)} DLQ replay and {ledgers.get('dlq_discards', 0)} "
        "discard row(s) for the id.\n"
        "Not traceable: events older than --since, trace.retention or the topic's "
        "retention; events written in the last second (not yet indexed); events written "
        "outside the service that no pipeline read."
    )
