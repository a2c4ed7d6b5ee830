"""Transforms: a 3-step chain (jq map, filter, validate) per event on one core, beside
the orjson floor and a libjq + fastjsonschema build of the same chain, measured in
the same run.

Every path starts from the same ~600-byte structured CloudEvents (JSON bytes) and
ends with the output encoded again, so the floor (orjson decode + encode and
nothing else) bounds them all.

Targets (issue 3): JSON Schema validation <= 5 us/event; jq map step >= 30,000
events/s; 3-step chain >= 25,000 events/s, >= 0.15x the floor and >= 3x the libjq
+ fastjsonschema chain.

Run: ``python -m bench.transforms`` (BENCH_EVENTS, BENCH_REPEAT to change the size).
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import jq
import orjson
from eventpipe.transforms import Chain, JqStep, ValidateStep
from eventpipe.transforms.event_form import to_event_form, with_data
from fastavro.validation import validate as fastavro_validate

from eventpipe.envelope import CloudEvent
from eventpipe.envelope.json import encode_structured, from_structured_dict

try:
    import fastjsonschema
except ImportError:  # pragma: no cover - the peer is optional
    fastjsonschema = None

N = int(os.environ.get("BENCH_EVENTS", "2000"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))

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
            {"sku": f"SKU-{(i + k) % 500:04d}", "qty": k + 1, "price": 9.99 + k} for k in range(3)
        ],
        "total": 41.97 + i % 10,
        "currency": "EUR",
        "status": "paid",
        "created_at": "2024-05-01T12:00:00Z",
        "shipping": {"street": "12 Engine Way", "city": "London", "zip": "NW1", "country": "GB"},
        "gift": i % 2 == 0,
        "notes": None,
    }
    event = CloudEvent.create(
        "shop.order.paid",
        "/shop/orders",
        data,
        id=f"0190a8e2-7c41-7d3a-9f10-{i:012d}",
        subject=f"ord-{i:06d}",
        partitionkey=f"cus-{i % 977}",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    return encode_structured(event)


def decode(raw: bytes) -> CloudEvent:
    return from_structured_dict(orjson.loads(raw))


def per_event(run: Callable[[list[Any]], Any], items: list[Any]) -> float:
    """Best seconds per item over REPEAT passes (gc collected before each)."""
    run(items[: min(200, len(items))])  # warm up
    best = float("inf")
    for _ in range(REPEAT):
        gc.collect()
        t0 = time.perf_counter()
        run(items)
        best = min(best, (time.perf_counter() - t0) / len(items))
    return best


# ---------------------------------------------------------------- the paths
def floor(raws: list[bytes]) -> None:
    loads, dumps = orjson.loads, orjson.dumps
    for raw in raws:
        dumps(loads(raw))


def full_path(chain: Chain) -> Callable[[list[bytes]], None]:
    process = chain.process

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


def peer_path() -> Callable[[list[bytes]], None] | None:
    """The same chain on libjq + fastjsonschema: each step a libjq program fed JSON
    text (libjq's fastest input), validation by a fastjsonschema-generated function;
    decoding, encoding and event copies are the same helpers our chain uses."""
    if fastjsonschema is None:
        return None
    map_p = jq.compile(MAP)
    filter_p = jq.compile(FILTER)
    check = fastjsonschema.compile(MAPPED_SCHEMA)

    def run(raws: list[bytes]) -> None:
        for raw in raws:
            event = decode(raw)
            for data in map_p.input_text(orjson.dumps(event.data).decode()).all():
                out = with_data(event, data)
                form = orjson.dumps(to_event_form(out)).decode()
                keep = filter_p.input_text(form).first()
                if keep is not None and keep is not False:
                    check(out.data)
                    encode_structured(out)

    return run


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


def pin_one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return "not pinned (no sched_setaffinity)"


def main() -> int:
    started = time.perf_counter()
    pinned = pin_one_core()
    raws = [make_raw(i) for i in range(N)]
    events = [decode(r) for r in raws]
    datas = [e.data for e in events]
    size = sum(len(r) for r in raws) / len(raws)
    print(
        f"bench/transforms: {N} distinct structured CloudEvents of ~{size:.0f} bytes, "
        f"best of {REPEAT} passes, {pinned}, Python {sys.version.split()[0]}"
    )

    steps_cfg: list[Any] = [
        {"jq": MAP},
        {"filter": FILTER},
        {"validate": {"schema": MAPPED_SCHEMA}},
    ]
    chain = Chain(steps_cfg)
    unfused = Chain(steps_cfg, fuse=False)
    on_libjq = Chain(
        [
            {"jq": {"program": MAP, "engine": "jq"}},
            {"filter": {"expression": FILTER, "engine": "jq"}},
            {"validate": {"schema": MAPPED_SCHEMA}},
        ]
    )
    assert [len(chain.process(e)) for e in events] == [1] * N, "every event passes the chain"
    map_step = JqStep.from_yaml(MAP)
    json_step = ValidateStep.from_yaml({"schema": ORDER_SCHEMA})
    avro_step = ValidateStep.from_yaml({"schema": AVRO_SCHEMA, "schema_type": "AVRO"})
    assert all(json_step.apply(e) and avro_step.apply(e) for e in events), "schemas accept the data"

    t_floor = per_event(floor, raws)
    t_chain = per_event(full_path(chain), raws)
    t_unfused = per_event(full_path(unfused), raws)
    t_libjq_chain = per_event(full_path(on_libjq), raws)
    peer = peer_path()
    t_peer = per_event(peer, raws) if peer is not None else float("nan")
    t_chain_only = per_event(events_path(chain.process), events)
    t_decode = per_event(lambda rs: [encode_structured(decode(r)) for r in rs], raws)
    t_map = per_event(events_path(map_step.process), events)

    t_json = per_event(events_path(json_step.apply), events)
    t_avro = per_event(events_path(avro_step.apply), events)
    fjs_check = fastjsonschema.compile(ORDER_SCHEMA) if fastjsonschema is not None else None
    t_fjs = per_event(lambda ds: [fjs_check(d) for d in ds], datas) if fjs_check else float("nan")
    t_fastavro = per_event(
        lambda ds: [fastavro_validate(d, avro_step.checker.parsed) for d in ds],  # type: ignore[union-attr]
        datas,
    )

    rows = [
        ["floor: orjson decode + encode", rate(t_floor), us(t_floor), "1.00x"],
        [
            "decode to CloudEvent + encode, no steps",
            rate(t_decode),
            us(t_decode),
            f"{t_floor / t_decode:.2f}x",
        ],
        [
            "3-step chain (jaq, fused; jsonschema-rs)",
            rate(t_chain),
            us(t_chain),
            f"{t_floor / t_chain:.2f}x",
        ],
        ["3-step chain, fusion off", rate(t_unfused), us(t_unfused), f"{t_floor / t_unfused:.2f}x"],
        [
            "3-step chain, engine: jq (libjq)",
            rate(t_libjq_chain),
            us(t_libjq_chain),
            f"{t_floor / t_libjq_chain:.2f}x",
        ],
        [
            "peer: libjq + fastjsonschema chain",
            rate(t_peer),
            us(t_peer),
            f"{t_floor / t_peer:.2f}x",
        ],
    ]
    print_table(
        "Full path per event: bytes -> CloudEvent -> steps -> bytes (1 core)",
        ["path", "events/s", "us/event", "vs floor"],
        rows,
    )
    print_table(
        "Steps alone, on decoded CloudEvents",
        ["step", "events/s", "us/event"],
        [
            ["jq map step (jaq)", rate(t_map), us(t_map)],
            ["3-step chain (fused)", rate(t_chain_only), us(t_chain_only)],
            ["validate: JSON Schema, 10-field nested (jsonschema-rs)", rate(t_json), us(t_json)],
            ["  reference: fastjsonschema, same schema", rate(t_fjs), us(t_fjs)],
            ["validate: Avro, same record (compiled checker)", rate(t_avro), us(t_avro)],
            ["  reference: fastavro.validation.validate", rate(t_fastavro), us(t_fastavro)],
        ],
    )

    checks = [
        ("JSON Schema validation <= 5 us/event", f"{us(t_json)} us", t_json * 1e6 <= 5),
        ("jq map step >= 30,000 events/s", rate(t_map), 1 / t_map >= 30_000),
        ("3-step chain >= 25,000 events/s", rate(t_chain), 1 / t_chain >= 25_000),
        ("3-step chain >= 0.15x floor", f"{t_floor / t_chain:.3f}x", t_floor / t_chain >= 0.15),
        (
            "3-step chain >= 3x libjq + fastjsonschema",
            f"{t_peer / t_chain:.2f}x",
            t_peer / t_chain >= 3,
        ),
    ]
    print_table(
        "Targets",
        ["target", "measured", "met"],
        [[name, got, "yes" if ok else "NO"] for name, got, ok in checks],
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {rss:.1f} MiB; took {time.perf_counter() - started:.1f} s")
    print(f"fused chain: {chain!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
