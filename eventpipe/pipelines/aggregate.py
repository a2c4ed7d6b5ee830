"""The ``aggregate`` step: count / sum / min / max / latest per key in tumbling or
hopping windows, kept in a changelog-backed faust table.

```yaml
steps:
  - aggregate:
      key: .data.customer           # jq over the event's JSON form; default: partitionkey
      value: .data.total            # jq; not needed for count
      op: sum                       # count | sum | min | max | latest
      window: {tumbling: 1m}        # or {hopping: {size: 5m, step: 1m}}
      retention: 1h                 # windows older than this are dropped (default 2 x size)
      time: event                   # event (the CloudEvent time) | processing
```

Each input event becomes one update event per window it falls in (hopping
windows overlap), which the following steps and the sinks receive, e.g. a
``topic`` sink that publishes the running results:

    data: {key, op, value, count, window_start, window_end}

The update's id is ``<input id>:<window start ms>`` and its source
``eventpipe:<pipeline>:<step path>``, so replays carry the same ids (dedup
downstream) and ``partitionkey`` is the aggregate key.

Correct across restarts: the table is restored from its changelog, and each
window remembers the highest input offset it applied per source partition, so
a record re-read after a crash is not counted twice (its update is emitted
again with the same id).  The table's changelog is flushed before the input
offsets are committed.  Results are exact when the aggregate key follows the
record key (the partitioning): otherwise one key's state is split across
partitions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from eventpipe.durations import Duration
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.event import format_time
from eventpipe.transforms.errors import TransformError
from eventpipe.transforms.event_form import to_event_form
from eventpipe.transforms.jq_engine import (
    DEFAULT_ENGINE,
    NO_OUTPUT,
    EngineName,
    JqCompileError,
    compile_program,
)

from .spec import SpecModel

Op = Literal["count", "sum", "min", "max", "latest"]


class HoppingSpec(SpecModel):
    size: Duration = Field(description="each window's length")
    step: Duration = Field(description="a new window starts this often (at most size)")


class WindowSpec(SpecModel):
    tumbling: Duration | None = Field(
        None, description="windows of this length, one after the other"
    )
    hopping: HoppingSpec | None = Field(None, description="overlapping windows")

    @model_validator(mode="after")
    def _one(self) -> WindowSpec:
        if (self.tumbling is None) == (self.hopping is None):
            raise ValueError(
                "give exactly one of `tumbling: 1m` or `hopping: {size: 5m, step: 1m}`"
            )
        if self.tumbling is not None and self.tumbling <= 0:
            raise ValueError("tumbling: the window size must be > 0")
        if self.hopping is not None:
            if self.hopping.step <= 0 or self.hopping.size <= 0:
                raise ValueError("hopping: size and step must be > 0")
            if self.hopping.step > self.hopping.size:
                raise ValueError("hopping: step must not exceed size (windows would leave gaps)")
        return self

    @property
    def size_ms(self) -> int:
        return int((self.tumbling if self.tumbling is not None else self.hopping.size) * 1000)  # type: ignore[union-attr]

    @property
    def step_ms(self) -> int:
        return int((self.tumbling if self.tumbling is not None else self.hopping.step) * 1000)  # type: ignore[union-attr]


class AggregateConfig(SpecModel):
    """Counts, sums, minimums, maximums or the latest value per key, in tumbling or
    hopping windows; each input event becomes an update event per window it falls in."""

    example: ClassVar[str] = """\
- aggregate:
    key: .data.customer           # jq over the event; default: partitionkey
    value: .data.total            # jq; not needed for count
    op: sum
    window: {tumbling: 1m}        # or {hopping: {size: 5m, step: 1m}}
    retention: 1h
"""

    key: str | None = Field(
        None, description="jq over the event giving the key; default: partitionkey"
    )
    value: str | None = Field(None, description="jq giving the value; required unless op is count")
    op: Op = Field("count", description="what is kept per key and window")
    window: WindowSpec = Field(description="give tumbling or hopping")
    retention: Duration | None = Field(
        None, description="windows older than this are dropped; default twice the window size"
    )
    time: Literal["event", "processing"] = Field(
        "event", description="event: the CloudEvent's time (else now); processing: now"
    )
    type: str = Field(
        "eventpipe.aggregate.updated", min_length=1, description="the update events' type"
    )
    engine: EngineName = Field(DEFAULT_ENGINE, description="jq engine: jaq (jaq-rs) or jq (libjq)")

    @model_validator(mode="after")
    def _check(self) -> AggregateConfig:
        if self.op != "count" and self.value is None:
            raise ValueError(f"op {self.op} needs `value:` (a jq expression, e.g. .data.total)")
        for field in ("key", "value"):
            src = getattr(self, field)
            if src is not None:
                try:
                    compile_program(src, self.engine)
                except JqCompileError as exc:
                    raise ValueError(f"{field}: {exc.message}") from exc
        return self


def window_starts(ts_ms: int, size_ms: int, step_ms: int) -> list[int]:
    """Starts of every window ``[start, start + size)`` that holds ``ts_ms``."""
    last = ts_ms - ts_ms % step_ms
    out = []
    start = last
    while start > ts_ms - size_ms:
        out.append(start)
        start -= step_ms
    out.reverse()
    return out


def _apply(op: Op, current: Any, count: int, value: Any) -> Any:
    if op == "count":
        return count + 1
    if op == "latest":
        return value
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TransformError(f"aggregate {op}: value must be a number, got {type(value).__name__}")
    if count == 0 or current is None:
        return value
    if op == "sum":
        return current + value
    if op == "min":
        return min(current, value)
    return max(current, value)


class Aggregator:
    """Runs one ``aggregate`` step against ``table`` (key -> {window start: entry})."""

    def __init__(
        self,
        config: AggregateConfig,
        table: MutableMapping[str, Any],
        *,
        pipeline: str,
        path: str,
        use_event: Callable[[Any], AbstractContextManager[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = config
        self.table = table
        self.use_event = use_event
        self.clock = clock
        self.path = path
        self.source = f"eventpipe:{pipeline}:{path}"
        self._key = compile_program(config.key, config.engine) if config.key else None
        self._value = compile_program(config.value, config.engine) if config.value else None
        self.size_ms = config.window.size_ms
        self.step_ms = config.window.step_ms
        self.retention_ms = int((config.retention or 2 * self.size_ms / 1000) * 1000)

    def _key_of(self, event: CloudEvent, form: dict[str, Any] | None) -> str:
        if self._key is None:
            pk = event.partitionkey
            if pk is None:
                raise TransformError(f"{self.path}: the event has no partitionkey; set `key:`")
            return pk
        v = self._key.first(form)
        if v is NO_OUTPUT or v is None:
            raise TransformError(f"{self.path}: the key expression yielded nothing")
        return v if isinstance(v, str) else str(v)

    def process(
        self, event: CloudEvent, fevent: Any, partition: int, offset: int
    ) -> list[CloudEvent]:
        """Apply ``event`` (read at ``partition`` / ``offset``); returns its updates."""
        form = to_event_form(event) if (self._key is not None or self._value is not None) else None
        key = self._key_of(event, form)
        value = None
        if self._value is not None:
            value = self._value.first(form)
            if value is NO_OUTPUT:
                raise TransformError(f"{self.path}: the value expression yielded nothing")
        if self.cfg.time == "event" and event.time is not None:
            ts_ms = int(event.time.timestamp() * 1000)
        else:
            ts_ms = int(self.clock() * 1000)
        state = self.table.get(key)
        windows: dict[str, Any] = dict(state) if state else {}
        p = str(partition)
        updates = []
        changed = False
        for start in window_starts(ts_ms, self.size_ms, self.step_ms):
            w = str(start)
            entry = windows.get(w)
            current, count, applied = (
                (entry[0], entry[1], dict(entry[2])) if entry else (None, 0, {})
            )
            if applied.get(p, -1) < offset:
                current = _apply(self.cfg.op, current, count, value)
                count += 1
                applied[p] = offset
                windows[w] = [current, count, applied]
                changed = True
            updates.append(self._update(event, key, start, current, count))
        horizon = ts_ms - self.retention_ms
        for w in [w for w in windows if int(w) + self.size_ms < horizon]:
            del windows[w]
            changed = True
        if changed:
            with self.use_event(fevent):
                self.table[key] = windows
        return updates

    def _update(
        self, event: CloudEvent, key: str, start: int, value: Any, count: int
    ) -> CloudEvent:
        end = start + self.size_ms
        data = {
            "key": key,
            "op": self.cfg.op,
            "value": value,
            "count": count,
            "window_start": format_time(datetime.fromtimestamp(start / 1000, UTC)),
            "window_end": format_time(datetime.fromtimestamp(end / 1000, UTC)),
        }
        return CloudEvent(
            id=f"{event.id}:{start}",
            source=self.source,
            type=self.cfg.type,
            data=data,
            time=event.time,
            datacontenttype="application/json",
            extensions={"partitionkey": key},
            validate=False,
        )
