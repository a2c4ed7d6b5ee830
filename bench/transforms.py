"""Transforms: a 3-step chain (jq map, filter, validate) per event on one core, beside
the orjson floor and a libjq + fastjsonschema build of the same chain, measured in
the same run.

* floor: the same ~600-byte structured CloudEvents, orjson-decoded and re-encoded;
* chain: ``Chain([{jq: MAP}, {filter: FILTER}, {validate: {schema: ...}}])`` on the
  decoded CloudEvents, every program on jaq (the default engine), per event and
  through ``run_batch`` (the pipelines' path), with and without fusion, and with
  ``engine: jq`` (libjq);
* peer: the same three steps written plainly on libjq (fed JSON text, its fastest
  input) and a fastjsonschema-generated validator;
* a second table adds the envelope's decode and encode to each path (bytes in,
  bytes out, as the floor);
* where a jaq call's time goes, and the alternatives to one call per event that
  were measured (one call per batch, JSON text in, fusing a data step into the
  next filter);
* validation alone: JSON Schema (10 top-level fields, nested) with jsonschema-rs,
  and Avro with the compiled checker, each beside its usual Python reference.

Times are CPU time of this pinned, single-threaded process, best of BENCH_REPEAT
rounds that each run every case once (interleaved, so a burst of load from other
processes does not land on one case only).

Targets (issue 3): JSON Schema validation <= 5 us/event; jq map step >= 30,000
events/s; 3-step chain >= 25,000 events/s, >= 0.15x the floor and >= 3x the libjq
+ fastjsonschema chain.

Run: ``python -m bench.transforms`` (BENCH_EVENTS, BENCH_REPEAT to change the size).
"""

from __future__ import annotations

import gc
import importlib
import os
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jaq
import jq
import orjson
from fastavro.validation import validate as fastavro_validate

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.json import encode_structured, from_structured_dict
from eventpipe.transforms import Chain, FilterStep, JqStep, ValidateStep
from eventpipe.transforms.avro_check import AvroChecker
from eventpipe.transforms.data_filter import data_form
from eventpipe.transforms.event_form import to_event_form, with_data
from eventpipe.transforms.jq_engine import native_tier

fastjsonschema: Any
try:
    import fastjsonschema
except ImportError:  # pragma: no cover - the peer is optional
    fastjsonschema = None

N = int(os.environ.get("BENCH_EVENTS", "2000"))
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
REPEAT = int(os.environ.get("BENCH_REPEAT", "7"))

MAP = (
    "{order_id, customer: .customer.id, tier: .customer.tier, total, currency,"
    " items: (.items | length), country: .shipping.country, status}"
)
FILTER = '.data.status == "paid" and .data.total > 0'
MAPPED_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["order_id", "customer", "total", "currency", "items", "status"],
    "properties": {
        "order_id": {"type": "string", "pattern": "^ord-[0-9]+$"},
        "customer": {"type": "string"},
        "tier": {"enum": ["gold", "silver", "bronze"]},
        "total": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "minLength": 3, "maxLength": 3},
        "items": {"type": "integer", "minimum": 1},
        "country": {"type": "string"},
        "status": {"type": "string"},
    },
    "additionalProperties": False,
}
# 10 top-level fields, nested objects and an array of objects.
ORDER_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["order_id", "customer", "items", "total", "currency", "status"],
    "properties": {
        "order_id": {"type": "string", "pattern": "^ord-[0-9]+$"},
        "customer": {
            "type": "object",
            "required": ["id", "name"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "email": {"type": "string"},
                "tier": {"enum": ["gold", "silver", "bronze"]},
            },
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "qty", "price"],
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "number", "minimum": 0},
                },
            },
        },
        "total": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "minLength": 3, "maxLength": 3},
        "status": {"enum": ["paid", "pending", "refunded"]},
        "created_at": {"type": "string"},
        "shipping": {
            "type": "object",
            "properties": {
                "street": {"type": "string"},
                "city": {"type": "string"},
                "zip": {"type": "string"},
                "country": {"type": "string", "minLength": 2, "maxLength": 2},
            },
        },
        "gift": {"type": "boolean"},
        "notes": {"type": ["string", "null"]},
    },
}
AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "order_id", "type": "string"},
        {
            "name": "customer",
            "type": {
                "type": "record",
                "name": "Customer",
                "fields": [
                    {"name": "id", "type": "string"},
                    {"name": "name", "type": "string"},
                    {"name": "email", "type": ["null", "string"], "default": None},
                    {
                        "name": "tier",
                        "type": {
                            "type": "enum",
                            "name": "Tier",
                            "symbols": ["gold", "silver", "bronze"],
                        },
                    },
                ],
            },
        },
        {
            "name": "items",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Item",
                    "fields": [
                        {"name": "sku", "type": "string"},
                        {"name": "qty", "type": "int"},
                        {"name": "price", "type": "double"},
                    ],
                },
            },
        },
        {"name": "total", "type": "double"},
        {"name": "currency", "type": "string"},
        {"name": "status", "type": "string"},
        {"name": "created_at", "type": "string"},
        {
            "name": "shipping",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [
                    {"name": n, "type": "string"} for n in ("street", "city", "zip", "country")
                ],
            },
        },
        {"name": "gift", "type": "boolean"},
        {"name": "notes", "type": ["null", "string"], "default": None},
    ],
}


def make_raw(i: int) -> bytes:
    data = {
        "order_id": f"ord-{i:06d}",
        "customer": {
            "id": f"cus-{i % 977}",
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "tier": ("gold", "silver", "bronze")[i % 3],
        },
        "items": [
            {"sku": f"SKU-{(i + k) % 500:04d}", "qty": k + 1, "price": 9.99 + k} for k in range(2)
        ],
        "total": 21.98 + i % 10,
        "currency": "EUR",
        "status": "paid",
        "created_at": "2024-05-01T12:00:00Z",
        "shipping": {"street": "12 Engine Way", "city": "London", "zip": "NW1", "country": "GB"},
        "gift": i % 2 == 0,
    }
    event = CloudEvent.create(
        "shop.order.paid",
        "/shop/orders",
        data,
        id=f"0190a8e2-7c41-7d3a-9f10-{i:012d}",
        subject=f"ord-{i:06d}",
        time=T0 + timedelta(seconds=i),
        partitionkey=f"cus-{i % 977}",
    )
    return encode_structured(event)


def decode(raw: bytes) -> CloudEvent:
    return from_structured_dict(orjson.loads(raw))


class Timings:
    """Cases measured in interleaved rounds: each round runs every case once (gc
    collected before each) and a case's time is its best round, in CPU seconds per
    item.  Interleaving spreads a burst of load from other processes over all cases
    instead of one, so ratios from one run compare like with like.

    CPU time of this (single-threaded, pinned) process: other processes sharing
    the core do not inflate it, as they would wall time."""

    def __init__(self) -> None:
        self.cases: list[tuple[Callable[[list[Any]], Any], list[Any]]] = []
        self.best: list[float] = []

    def add(self, run: Callable[[list[Any]], Any] | None, items: list[Any]) -> int:
        """A case; ``run`` None (a peer that is not installed) measures as NaN."""
        self.cases.append((run or (lambda _: None), items if run else []))
        return len(self.cases) - 1

    def measure(self) -> None:
        self.best = [float("inf") if items else float("nan") for _, items in self.cases]
        for run, items in self.cases:
            run(items[: min(200, len(items))])  # warm up
        for _ in range(REPEAT):
            for n, (run, items) in enumerate(self.cases):
                if not items:
                    continue
                gc.collect()
                t0 = time.process_time()
                run(items)
                self.best[n] = min(self.best[n], (time.process_time() - t0) / len(items))

    def __getitem__(self, case: int) -> float:
        return self.best[case]


# ---------------------------------------------------------------- the paths
def floor(raws: list[bytes]) -> None:
    loads, dumps = orjson.loads, orjson.dumps
    for raw in raws:
        dumps(loads(raw))


def full_path(process: Callable[[CloudEvent], list[CloudEvent]]) -> Callable[[list[bytes]], None]:
    def run(raws: list[bytes]) -> None:
        for raw in raws:
            for out in process(decode(raw)):
                encode_structured(out)

    return run


def events_path(process: Callable[[CloudEvent], list[CloudEvent]]) -> Callable[[list[Any]], None]:
    def run(events: list[CloudEvent]) -> None:
        for e in events:
            process(e)

    return run


def peer_chain() -> Callable[[CloudEvent], list[CloudEvent]] | None:
    """The same chain on libjq + fastjsonschema, written plainly: each step a libjq
    program fed JSON text (libjq's fastest input), validation by a
    fastjsonschema-generated function, event copies by the same helper ours uses."""
    if fastjsonschema is None:
        return None
    map_p = jq.compile(MAP)
    filter_p = jq.compile(FILTER)
    check = fastjsonschema.compile(MAPPED_SCHEMA)

    def process(event: CloudEvent) -> list[CloudEvent]:
        outs = []
        for data in map_p.input_text(orjson.dumps(event.data).decode()).all():
            out = with_data(event, data)
            keep = filter_p.input_text(orjson.dumps(to_event_form(out)).decode()).first()
            if keep is not None and keep is not False:
                check(out.data)
                outs.append(out)
        return outs

    return process


# ------------------------------------------------------------------- output
def rate(seconds_per_event: float) -> str:
    return f"{1 / seconds_per_event:,.0f}"


def us(seconds_per_event: float) -> str:
    return f"{seconds_per_event * 1e6:.2f}"


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(f"\n{title}")
    print(line(columns))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pin_one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return "not pinned (no sched_setaffinity)"


# ------------------------------------------------------- jaq, call by call
BATCH = 100


def jaq_alternatives(
    events: list[CloudEvent],
) -> list[tuple[str, Callable[[list[Any]], Any], list[Any]]]:
    """The jaq calls behind the map and filter steps, and the alternatives measured
    against them (each returns what a step would need, errors aside)."""
    datas = [e.data for e in events]
    mapped = [with_data(e, d) for e in events for d in jaq.compile(MAP).run(e.data)]
    forms = [to_event_form(e) for e in mapped]
    empty = jaq.compile("empty")
    map_p = jaq.compile(MAP)
    filter_p = jaq.compile(FILTER)
    # One call per batch: every event's outputs (or an error marker) in one array.
    map_batch = jaq.compile(f"[.[] | try [({MAP})] catch null]")
    map_stream = jaq.compile(f"try [({MAP})] catch null")
    filter_batch = jaq.compile(f"[.[] | try [first({FILTER})] catch null]")
    # What the chain runs since a filter of .data only joins the data steps: map and
    # filter in one program on the data.
    on_data = data_form(FILTER)
    assert on_data is not None
    map_then_filter = jaq.compile(f"({MAP}) | select(first({on_data}))")
    # The map run inside the filter's program, on the event's JSON form.
    map_in_filter = jaq.compile(
        f"(.data | ({MAP})) as $d | .data = $d | select(first({FILTER})) | $d"
    )

    def batches(items: list[Any]) -> list[list[Any]]:
        return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]

    def per_batch(program: Any) -> Callable[[list[Any]], Any]:
        return lambda xs: [program.run(b) for b in batches(xs)]

    def text_stream(xs: list[Any]) -> Any:
        dumps = orjson.dumps
        return [map_stream.run(b"\n".join([dumps(d) for d in b]), text=True) for b in batches(xs)]

    return [
        ("call overhead: `empty` on null", lambda xs: [empty.run(None) for _ in xs], datas),
        (
            "`empty` on the data (overhead + conversion in)",
            lambda xs: [empty.run(d) for d in xs],
            datas,
        ),
        (
            "map, per event on the Python value (the jq step)",
            lambda xs: [map_p.run(d) for d in xs],
            datas,
        ),
        (
            "map, per event on JSON text (orjson.dumps)",
            lambda xs: [map_p.run(orjson.dumps(d), text=True) for d in xs],
            datas,
        ),
        (f"map, one call per {BATCH} events (array)", per_batch(map_batch), datas),
        (f"map, one call per {BATCH} events (JSON text stream)", text_stream, datas),
        (
            "filter, per event on the event form (a filter reading more than .data)",
            lambda xs: [filter_p.first(f) for f in xs],
            forms,
        ),
        (f"filter, one call per {BATCH} events (array)", per_batch(filter_batch), forms),
        (
            "map + filter on data, one program (as the chain runs them)",
            lambda xs: [with_data(e, d) for e in xs for d in map_then_filter.run(e.data)],
            events,
        ),
        (
            "map + filter, two calls per event (unfused)",
            lambda xs: [
                filter_p.first(to_event_form(with_data(e, d)))
                for e in xs
                for d in map_p.run(e.data)
            ],
            events,
        ),
        (
            "map + filter, one program on the event form",
            lambda xs: [with_data(e, d) for e in xs for d in map_in_filter.run(to_event_form(e))],
            events,
        ),
    ]


def main() -> int:
    started = time.perf_counter()
    pinned = pin_one_core()
    raws = [make_raw(i) for i in range(N)]
    events = [decode(r) for r in raws]
    datas = [e.data for e in events]
    rss_events = peak_rss_mib()
    importlib.import_module("eventpipe.service.catalog")  # every plugin module, as a service
    rss_plugins = peak_rss_mib()
    size = sum(len(r) for r in raws) / len(raws)
    print(
        f"bench/transforms: {N} distinct structured CloudEvents of ~{size:.0f} bytes, "
        f"best of {REPEAT} interleaved rounds, CPU time per event, {pinned}, "
        f"Python {sys.version.split()[0]}, jaq-rs on jaq-core (default), libjq reference"
    )

    steps_cfg: list[Any] = [
        {"jq": MAP},
        {"filter": FILTER},
        {"validate": {"schema": MAPPED_SCHEMA}},
    ]
    chain = Chain(steps_cfg)
    on_libjq = Chain(
        [
            {"jq": {"program": MAP, "engine": "jq"}},
            {"filter": {"expression": FILTER, "engine": "jq"}},
            {"validate": {"schema": MAPPED_SCHEMA}},
        ]
    )
    # A filter before the map: fused into one program (filters, then data steps).
    filter_first_cfg: list[Any] = [
        {"filter": '.type == "shop.order.paid" and .data.status == "paid"'},
        {"jq": MAP},
        {"validate": {"schema": MAPPED_SCHEMA}},
    ]
    filter_first = Chain(filter_first_cfg)
    filter_first_unfused = Chain(filter_first_cfg, fuse=False)
    peer = peer_chain()
    for c in (chain, on_libjq, filter_first, filter_first_unfused):
        assert [len(c.process(e)) for e in events] == [1] * N, "every event passes the chain"
    assert chain.run_batch(events).outputs == [chain.process(e) for e in events]
    if peer is not None:
        assert [peer(e) for e in events[:50]] == [chain.process(e) for e in events[:50]]
    map_step = JqStep.from_yaml(MAP)
    map_libjq = JqStep.from_yaml({"program": MAP, "engine": "jq"})
    filter_step = FilterStep.from_yaml(FILTER)
    with native_tier(False):  # the same steps with every program on jaq itself
        map_jaq = JqStep.from_yaml(MAP)
        filter_jaq = FilterStep.from_yaml(FILTER)
        chain_jaq = Chain(steps_cfg)
    assert chain_jaq.run_batch(events).outputs == chain.run_batch(events).outputs
    filter_libjq = FilterStep.from_yaml({"expression": FILTER, "engine": "jq"})
    json_step = ValidateStep.from_yaml({"schema": ORDER_SCHEMA})
    avro_step = ValidateStep.from_yaml({"schema": AVRO_SCHEMA, "schema_type": "AVRO"})
    assert all(json_step.apply(e) and avro_step.apply(e) for e in events), "schemas accept the data"
    assert isinstance(avro_step, ValidateStep) and isinstance(avro_step.checker, AvroChecker)
    parsed_avro = avro_step.checker.parsed

    timings = Timings()
    c_floor = timings.add(floor, raws)
    c_chain = timings.add(events_path(chain.process), events)
    c_batch = timings.add(chain.run_batch, events)
    c_batch_jaq = timings.add(chain_jaq.run_batch, events)
    c_libjq_chain = timings.add(events_path(on_libjq.process), events)
    c_peer = timings.add(events_path(peer) if peer is not None else None, events)
    c_ff = timings.add(events_path(filter_first.process), events)
    c_ff_unfused = timings.add(events_path(filter_first_unfused.process), events)

    c_codec = timings.add(lambda rs: [encode_structured(decode(r)) for r in rs], raws)
    c_full = timings.add(full_path(chain.process), raws)
    c_full_peer = timings.add(full_path(peer) if peer is not None else None, raws)

    c_map = timings.add(events_path(map_step.process), events)
    c_map_libjq = timings.add(events_path(map_libjq.process), events)
    c_map_jaq = timings.add(events_path(map_jaq.process), events)
    mapped = [out for e in events for out in map_step.process(e)]
    c_filter = timings.add(events_path(filter_step.process), mapped)
    c_filter_jaq = timings.add(events_path(filter_jaq.process), mapped)
    c_filter_libjq = timings.add(events_path(filter_libjq.process), mapped)
    c_json = timings.add(events_path(json_step.apply), events)
    c_avro = timings.add(events_path(avro_step.apply), events)
    fjs_check = fastjsonschema.compile(ORDER_SCHEMA) if fastjsonschema is not None else None
    c_fjs = timings.add(
        (lambda ds: [fjs_check(d) for d in ds]) if fjs_check is not None else None, datas
    )
    c_fastavro = timings.add(lambda ds: [fastavro_validate(d, parsed_avro) for d in ds], datas)
    c_alternatives = [
        (name, timings.add(run, items)) for name, run, items in jaq_alternatives(events)
    ]

    timings.measure()
    t_floor = timings[c_floor]
    t_chain = timings[c_chain]
    t_batch = timings[c_batch]
    t_batch_jaq = timings[c_batch_jaq]
    t_libjq_chain = timings[c_libjq_chain]
    t_peer = timings[c_peer]
    t_ff = timings[c_ff]
    t_ff_unfused = timings[c_ff_unfused]
    t_codec = timings[c_codec]
    t_full = timings[c_full]
    t_full_peer = timings[c_full_peer]
    t_map = timings[c_map]
    t_map_libjq = timings[c_map_libjq]
    t_map_jaq = timings[c_map_jaq]
    t_filter_jaq = timings[c_filter_jaq]
    t_filter = timings[c_filter]
    t_filter_libjq = timings[c_filter_libjq]
    t_json = timings[c_json]
    t_avro = timings[c_avro]
    t_fjs = timings[c_fjs]
    t_fastavro = timings[c_fastavro]
    t_alternatives = [(name, timings[c]) for name, c in c_alternatives]

    def vs_floor(t: float) -> str:
        return f"{t_floor / t:.3f}x"

    def vs_peer(t: float, peer_t: float = t_peer) -> str:
        return f"{peer_t / t:.2f}x"

    print_table(
        "The 3-step chain (jq map, filter, validate) on decoded CloudEvents, beside the floor",
        ["path", "events/s", "us/event", "vs floor", "vs peer"],
        [
            [
                "floor: orjson decode + encode of the event",
                rate(t_floor),
                us(t_floor),
                "1.000x",
                "",
            ],
            [
                "chain: jaq map + filter, jsonschema-rs (process)",
                rate(t_chain),
                us(t_chain),
                vs_floor(t_chain),
                vs_peer(t_chain),
            ],
            [
                "  same chain through run_batch (pipelines' path)",
                rate(t_batch),
                us(t_batch),
                vs_floor(t_batch),
                vs_peer(t_batch),
            ],
            [
                "  same, native tier off (every program on jaq)",
                rate(t_batch_jaq),
                us(t_batch_jaq),
                vs_floor(t_batch_jaq),
                vs_peer(t_batch_jaq),
            ],
            [
                "chain, engine: jq (libjq + jsonschema-rs)",
                rate(t_libjq_chain),
                us(t_libjq_chain),
                vs_floor(t_libjq_chain),
                vs_peer(t_libjq_chain),
            ],
            ["peer: libjq + fastjsonschema", rate(t_peer), us(t_peer), vs_floor(t_peer), "1.00x"],
            [
                "filter before the map (fused: one jaq call)",
                rate(t_ff),
                us(t_ff),
                vs_floor(t_ff),
                "",
            ],
            [
                "  same, fusion off (two jaq calls)",
                rate(t_ff_unfused),
                us(t_ff_unfused),
                vs_floor(t_ff_unfused),
                "",
            ],
        ],
    )
    print_table(
        "Full path: event bytes -> CloudEvent -> chain -> bytes (envelope codec included)",
        ["path", "events/s", "us/event", "vs floor", "vs peer"],
        [
            ["floor: orjson decode + encode", rate(t_floor), us(t_floor), "1.000x", ""],
            [
                "envelope decode + encode only, no steps",
                rate(t_codec),
                us(t_codec),
                vs_floor(t_codec),
                "",
            ],
            ["chain", rate(t_full), us(t_full), vs_floor(t_full), vs_peer(t_full, t_full_peer)],
            [
                "peer: libjq + fastjsonschema",
                rate(t_full_peer),
                us(t_full_peer),
                vs_floor(t_full_peer),
                "1.00x",
            ],
        ],
    )
    print_table(
        "Steps alone, on decoded CloudEvents",
        ["step", "events/s", "us/event"],
        [
            ["jq map step (jaq, native tier)", rate(t_map), us(t_map)],
            ["jq map step, native tier off (jaq)", rate(t_map_jaq), us(t_map_jaq)],
            ["jq map step, engine: jq (libjq)", rate(t_map_libjq), us(t_map_libjq)],
            ["filter step on the mapped events (jaq, native tier)", rate(t_filter), us(t_filter)],
            ["filter step, native tier off (jaq)", rate(t_filter_jaq), us(t_filter_jaq)],
            ["filter step, engine: jq (libjq)", rate(t_filter_libjq), us(t_filter_libjq)],
            ["validate: JSON Schema, 10-field nested (jsonschema-rs)", rate(t_json), us(t_json)],
            ["  reference: fastjsonschema, same schema", rate(t_fjs), us(t_fjs)],
            ["validate: Avro, same record (compiled checker)", rate(t_avro), us(t_avro)],
            ["  reference: fastavro.validation.validate", rate(t_fastavro), us(t_fastavro)],
        ],
    )
    print_table(
        "jaq calls alone (jaq-rs, no step around them): where the time goes, and alternatives",
        ["call", "events/s", "us/event"],
        [[name, rate(t), us(t)] for name, t in t_alternatives],
    )

    def target(name: str, got: str, ok: bool) -> tuple[str, str, bool]:
        return name, got, ok

    checks = [
        target("JSON Schema validation <= 5 us/event", f"{us(t_json)} us", t_json * 1e6 <= 5),
        target("jq map step >= 30,000 events/s", rate(t_map), 1 / t_map >= 30_000),
        target("3-step chain >= 25,000 events/s", rate(t_chain), 1 / t_chain >= 25_000),
        target("  ... full path (codec included)", rate(t_full), 1 / t_full >= 25_000),
        target("3-step chain >= 0.15x floor", vs_floor(t_chain), t_floor / t_chain >= 0.15),
        target("  ... full path (codec included)", vs_floor(t_full), t_floor / t_full >= 0.15),
        target(
            "3-step chain >= 3x libjq + fastjsonschema", vs_peer(t_chain), t_peer / t_chain >= 3
        ),
        target(
            "  ... full path (codec included)",
            vs_peer(t_full, t_full_peer),
            t_full_peer / t_full >= 3,
        ),
    ]
    print_table(
        "Targets (chain on decoded CloudEvents as the first table; full path as the second)",
        ["target", "measured", "met"],
        [[name, got, "yes" if ok else "NO"] for name, got, ok in checks],
    )
    print(
        f"\npeak RSS {peak_rss_mib():.1f} MiB (after imports and the events: {rss_events:.1f}; "
        f"after the registry imported every plugin module: {rss_plugins:.1f}); "
        f"took {time.perf_counter() - started:.1f} s"
    )
    print(f"chain plan: {chain!r}; filter first: {filter_first!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
