"""A chain of steps built from YAML, run per event or per batch.

```yaml
steps:
  - jq: '{id: .order_id, total, customer: .customer.id}'
  - filter: '.data.total > 10'
  - route: '"orders." + (.data.customer | ascii_downcase)'
  - set: {subject: .data.id, partitionkey: .data.customer}
  - validate: {schema: {type: object, required: [id]}}
```

Each item is a one-key mapping: the step's registered name and its config
(or a shorthand for the main field, e.g. a bare string for ``jq``).  Building
checks every step and raises one ConfigError listing every problem with its
path (``steps[2].jq: ...``); jq programs and schemas are compiled then, so a
bad one fails at load, never at the first event.

Consecutive jq-family steps are fused into one program
(:mod:`eventpipe.transforms.fusion`); ``fuse=False`` turns that off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventpipe.config_keys import did_you_mean
from eventpipe.envelope import CloudEvent
from eventpipe.errors import ConfigError
from eventpipe.sink import BatchError

from .base import SchemaResolver, Step, StepContext, StepPlugin, build_step
from .catalog import STEPS
from .event_form import distinct_ids
from .fusion import Runner, plan


@dataclass
class BatchResult:
    """Outputs per input event (empty for a failed one) and the failures by index."""

    outputs: list[list[CloudEvent]]
    failed: dict[int, BaseException] = field(default_factory=dict)


class ChainBatchError(BatchError):
    """Some events of a batch failed; ``outputs`` still holds the others' results."""

    def __init__(self, failed: dict[int, BaseException], outputs: list[list[CloudEvent]]) -> None:
        super().__init__(failed)
        self.outputs = outputs


class Chain:
    """Steps built from a list of YAML items, run in order."""

    def __init__(
        self,
        config: Sequence[Any],
        *,
        resolve_schema: SchemaResolver | None = None,
        fuse: bool = True,
        source: str | None = None,
        path: str = "steps",
        catalog: Mapping[str, StepPlugin] = STEPS,
    ) -> None:
        """Build and check every step; raises ConfigError listing all problems.

        ``resolve_schema(subject, version) -> (schema_type, schema_text)`` lets
        ``validate`` steps name a registry subject.  ``fuse=False`` turns fusion
        off (e.g. to compare).  ``source`` (a file name) and ``path`` only label
        problems.  ``catalog``: the steps a YAML item may name.
        """
        context = StepContext(resolve_schema=resolve_schema)
        self.steps = build_steps(config, context=context, source=source, path=path, catalog=catalog)
        self.fused = fuse
        self.runners: list[Runner] = plan(self.steps, fuse=fuse)

    def process(self, event: CloudEvent) -> list[CloudEvent]:
        """The events ``event`` becomes; raises the first step's error (a StepError,
        permanent) with ``.step`` naming it."""
        events = [event]
        for runner in self.runners:
            if len(events) == 1:
                events = runner.apply(events[0])
            else:
                events = [out for e in events for out in runner.apply(e)]
            if not events:
                return events
        return distinct_ids(events) if len(events) > 1 else events

    def run_batch(self, events: Sequence[CloudEvent]) -> BatchResult:
        """Every event of a batch; a failure affects only its own event.

        Each event runs on its own, one engine call per runner: running a step
        over the whole batch in one jq call measured slower on jaq (see
        :mod:`eventpipe.transforms.jq_engine`), and so did going runner by
        runner over the batch."""
        result = BatchResult(outputs=[])
        for n, event in enumerate(events):
            try:
                result.outputs.append(self.process(event))
            except Exception as exc:
                result.failed[n] = exc
                result.outputs.append([])
        return result

    def process_batch(self, events: Sequence[CloudEvent]) -> list[list[CloudEvent]]:
        """Outputs per event, or ChainBatchError naming the failed ones (STYLE habit 5)."""
        result = self.run_batch(events)
        if result.failed:
            raise ChainBatchError(result.failed, result.outputs)
        return result.outputs

    def describe(self) -> list[str]:
        """One line per runner: which steps run, fused or not."""
        return [r.name for r in self.runners]

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"Chain({' | '.join(self.describe())})"


def build_steps(
    config: Sequence[Any],
    *,
    context: StepContext | None = None,
    source: str | None = None,
    path: str = "steps",
    catalog: Mapping[str, StepPlugin] = STEPS,
) -> list[Step]:
    """Steps from YAML items; raises one ConfigError with every problem."""
    if isinstance(config, str | bytes) or not isinstance(config, Sequence):
        raise ConfigError([(path, "must be a list of steps")], source=source)
    problems: list[tuple[str, str]] = []
    built: list[Step] = []
    for i, item in enumerate(config):
        where = f"{path}[{i}]"
        if not isinstance(item, Mapping) or len(item) != 1:
            problems.append(
                (where, "each step is a mapping with one key, its name: e.g. {jq: '.data'}")
            )
            continue
        ((kind, raw),) = item.items()
        plugin = catalog.get(kind) if isinstance(kind, str) else None
        if plugin is None:
            known = sorted(catalog)
            hint = did_you_mean(str(kind), known)
            problems.append((where, f"unknown step {kind!r}{hint} (known: {', '.join(known)})"))
            continue
        step, step_problems = build_step(
            plugin, raw, path=f"{where}.{kind}", name=f"{where}.{kind}", context=context
        )
        if step is None:
            problems.extend(step_problems)
        else:
            built.append(step)
    if problems:
        raise ConfigError(problems, source=source)
    return built
