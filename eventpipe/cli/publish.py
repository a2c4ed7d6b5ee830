"""``eventpipe publish``: one event from flags, or many from NDJSON with a progress bar."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eventpipe.cli.common import (
    CliError,
    add_command,
    add_config_args,
    err_console,
    settings_from_args,
)
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.json import from_structured_dict
from eventpipe.errors import EventpipeError

if TYPE_CHECKING:
    from eventpipe.publisher import Publisher

CHUNK = 500


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "publish",
        "publish CloudEvents to a topic",
        description=(
            "Publish one event built from flags (--data), or many from NDJSON (--ndjson): each "
            "line is either a structured CloudEvent (it has 'specversion') or a data value "
            "wrapped with --type/--source.  Returns after the broker acknowledged."
        ),
    )
    add_config_args(p, database=False, kafka=True)
    p.add_argument("--topic", "-t", required=True, help="the topic to publish to")
    p.add_argument("--type", dest="ce_type", help="CloudEvent type, e.g. com.example.order.created")
    p.add_argument("--source", dest="ce_source", help="CloudEvent source, e.g. /shop/orders")
    p.add_argument("--subject", help="CloudEvent subject")
    p.add_argument("--id", dest="ce_id", help="event id (default: a UUIDv7)")
    p.add_argument("--key", help="partition key (sets the partitionkey extension)")
    p.add_argument("--structured", action="store_true", help="structured mode instead of binary")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="JSON value, or @FILE to read it from a file")
    src.add_argument("--ndjson", metavar="FILE|-", help="bulk: one event per line ('-' = stdin)")
    p.add_argument(
        "--failed",
        metavar="FILE",
        help="where failed NDJSON lines go (default: FILE.failed, or failed.ndjson for stdin)",
    )
    p.add_argument("--create-topic", action="store_true", help="create the topic if missing")
    p.set_defaults(func=cmd_publish)


def _parse_data(value: str) -> Any:
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CliError(f"--data {value}: cannot read {path}: {exc.strerror}") from exc
        where = str(path)
    else:
        raw = value.encode()
        where = "--data"
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CliError(
            f"{where} is not valid JSON ({exc}); quote JSON strings, e.g. --data '\"text\"', "
            "or pass --data @file.json"
        ) from exc


def _event_from_value(value: Any, args: argparse.Namespace, line_no: int | None) -> CloudEvent:
    if isinstance(value, dict) and "specversion" in value:
        event = from_structured_dict(value)
        if args.key and "partitionkey" not in event.extensions:
            event.extensions["partitionkey"] = args.key
        return event
    if not args.ce_type or not args.ce_source:
        where = f"line {line_no}: " if line_no else ""
        raise CliError(
            f"{where}--type and --source are required when the input is event data rather than "
            "a structured CloudEvent"
        )
    ext = {"partitionkey": args.key} if args.key else {}
    return CloudEvent.create(
        args.ce_type,
        args.ce_source,
        value,
        id=args.ce_id if line_no is None else None,
        subject=args.subject,
        **ext,
    )


async def _ensure_topic(args: argparse.Namespace, publisher: Publisher) -> None:
    from eventpipe.kafka.admin import TopicAdmin

    async with TopicAdmin(publisher.kafka) as admin:
        if await admin.exists(args.topic):
            return
        if not args.create_topic:
            raise CliError(
                f"topic {args.topic!r} does not exist on {publisher.kafka.bootstrap}; pass "
                "--create-topic, or list it under `topics:` in the config"
            )
        await admin.ensure_topics([args.topic])


def cmd_publish(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    mode = "structured" if args.structured else "binary"
    if args.data is not None:
        event = _event_from_value(_parse_data(args.data), args, None)
        return asyncio.run(_publish_one(args, settings, mode, event))
    total = _count_lines(args.ndjson)
    return asyncio.run(_publish_ndjson(args, settings, mode, total))


async def _publish_one(args: argparse.Namespace, settings: Any, mode: Any, ev: CloudEvent) -> int:
    from eventpipe.publisher import Publisher

    async with Publisher(settings, mode=mode) as publisher:
        await _ensure_topic(args, publisher)
        ack = await publisher.publish(args.topic, ev)
    print(
        orjson.dumps(
            {"id": ack.id, "topic": ack.topic, "partition": ack.partition, "offset": ack.offset}
        ).decode()
    )
    return 0


def _open_input(name: str) -> IO[bytes]:
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")
    except OSError as exc:
        raise CliError(f"--ndjson {name}: cannot open: {exc.strerror}") from exc


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for n, line in enumerate(stream, 1):
        if line.strip():
            yield n, line.rstrip(b"\r\n")


def _count_lines(name: str) -> int | None:
    """For the progress bar's total; a pipe has none."""
    if name == "-":
        return None
    try:
        with open(name, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError as exc:
        raise CliError(f"--ndjson {name}: cannot open: {exc.strerror}") from exc


async def _publish_ndjson(
    args: argparse.Namespace, settings: Any, mode: Any, total: int | None
) -> int:
    from eventpipe.publisher import PublishBatchError, Publisher

    failed_path = Path(
        args.failed or ("failed.ndjson" if args.ndjson == "-" else f"{args.ndjson}.failed")
    )
    stream = _open_input(args.ndjson)
    sent = failed = 0
    failed_out: IO[bytes] | None = None

    def fail(line: bytes, reason: str, line_no: int) -> None:
        nonlocal failed, failed_out
        failed += 1
        if failed_out is None:
            failed_out = open(failed_path, "wb")  # noqa: SIM115 - closed below
        failed_out.write(line + b"\n")
        if failed <= 5:
            err_console.print(f"line {line_no}: {reason}")

    progress = Progress(
        TextColumn("publishing to [bold]{task.fields[topic]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    try:
        async with Publisher(settings, mode=mode) as publisher:
            await _ensure_topic(args, publisher)
            with progress:
                task = progress.add_task("publish", total=total, topic=args.topic, failed=0)
                chunk: list[tuple[int, bytes, CloudEvent]] = []

                async def flush() -> None:
                    nonlocal sent
                    if not chunk:
                        return
                    try:
                        await publisher.publish_batch(args.topic, [c[2] for c in chunk])
                        sent += len(chunk)
                    except PublishBatchError as exc:
                        sent += len(exc.acked)
                        for i, err in exc.failed.items():
                            fail(chunk[i][1], str(err), chunk[i][0])
                    progress.update(task, advance=len(chunk), failed=failed)
                    chunk.clear()

                for line_no, line in _lines(stream):
                    try:
                        value = orjson.loads(line)
                        chunk.append((line_no, line, _event_from_value(value, args, line_no)))
                    except orjson.JSONDecodeError as exc:
                        fail(line, f"not valid JSON: {exc}", line_no)
                        progress.update(task, advance=1, failed=failed)
                    except (EventpipeError, CliError) as exc:
                        fail(line, str(exc), line_no)
                        progress.update(task, advance=1, failed=failed)
                    if len(chunk) >= CHUNK:
                        await flush()
                await flush()
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
        if failed_out is not None:
            failed_out.close()
    summary = f"sent {sent}, failed {failed}"
    if failed:
        summary += f"; failed lines written to {failed_path}"
    err_console.print(summary)
    return 1 if failed else 0
