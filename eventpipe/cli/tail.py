"""``eventpipe tail``: print the CloudEvents on a topic, decoded, one JSON per line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from eventpipe.cli.common import (
    CliError,
    add_command,
    add_config_args,
    err_console,
    settings_from_args,
)
from eventpipe.envelope.json import to_structured_dict
from eventpipe.envelope.kafka import from_kafka
from eventpipe.errors import EventpipeError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "tail", "print the CloudEvents on a topic, one JSON per line")
    add_config_args(p, database=False, kafka=True)
    p.add_argument("--topic", "-t", required=True, help="the topic to read")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    p.add_argument("--jq", metavar="EXPR", help="jq program applied to each event (as JSON)")
    p.add_argument("--max", type=int, metavar="N", help="stop after N events")
    p.add_argument("--idle-timeout", type=float, metavar="S", help="stop after S idle seconds")
    p.add_argument("--meta", action="store_true", help="include partition and offset")
    p.set_defaults(func=cmd_tail)


def _compile(expr: str | None) -> Any:
    if not expr:
        return None
    import jq

    try:
        return jq.compile(expr)
    except ValueError as exc:
        raise CliError(f"--jq {expr!r} does not compile: {exc}") from exc


def cmd_tail(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    program = _compile(args.jq)
    return asyncio.run(_tail(args, settings, program))


async def _tail(args: argparse.Namespace, settings: Any, program: Any) -> int:
    from aiokafka import AIOKafkaConsumer

    from eventpipe.kafka.admin import TopicAdmin
    from eventpipe.kafka.client import client_kwargs, start_client

    async with TopicAdmin(settings.kafka) as admin:
        if not await admin.exists(args.topic):
            raise CliError(f"topic {args.topic!r} does not exist on {settings.kafka.bootstrap}")
    consumer = AIOKafkaConsumer(
        args.topic,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        **client_kwargs(settings.kafka),
    )
    await start_client(consumer, settings.kafka, f"read {args.topic}")
    out = sys.stdout
    seen = 0
    loop = asyncio.get_running_loop()
    last = loop.time()
    try:
        while args.max is None or seen < args.max:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            if not batches:
                if args.idle_timeout is not None and loop.time() - last > args.idle_timeout:
                    break
                continue
            last = loop.time()
            for tp, records in batches.items():
                for rec in records:
                    try:
                        ev = from_kafka(rec.key, rec.value, list(rec.headers))
                    except EventpipeError as exc:
                        err_console.print(
                            f"{tp.topic}:{tp.partition}:{rec.offset}: not a CloudEvent: {exc}"
                        )
                        continue
                    doc: Any = to_structured_dict(ev)
                    if args.meta:
                        doc = {**doc, "_partition": tp.partition, "_offset": rec.offset}
                    outputs = [doc] if program is None else program.input_value(doc).all()
                    for o in outputs:
                        out.write(orjson.dumps(o).decode() + "\n")
                    out.flush()
                    seen += 1
                    if args.max is not None and seen >= args.max:
                        break
                if args.max is not None and seen >= args.max:
                    break
    finally:
        await consumer.stop()
    return 0
