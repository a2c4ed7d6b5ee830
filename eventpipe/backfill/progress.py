"""The progress display: a rich bar with events/s and ETA on a terminal, a line
every few seconds otherwise (logs, CI), or nothing."""

from __future__ import annotations

import time
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class ProgressView(Protocol):
    def start(self, description: str, total: int, completed: int) -> None: ...

    def advance(self, offsets: int, events: int) -> None:
        """``offsets`` moves the bar (records consumed, in range or not); ``events``
        counts records put through the pipeline."""

    def stop(self) -> None: ...


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.fields.get("rate")
        return Text(f"{speed:,.0f} events/s" if speed is not None else "- events/s")


class _Rate:
    """Events per second over the last few seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self.samples: list[tuple[float, int]] = []
        self.total = 0

    def add(self, n: int) -> float:
        now = time.monotonic()
        self.total += n
        self.samples.append((now, self.total))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.pop(0)
        t0, n0 = self.samples[0]
        return (self.total - n0) / (now - t0) if now > t0 else 0.0


class RichView:
    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("backfill", total=None, rate=None)
        self.rate = _Rate()

    def start(self, description: str, total: int, completed: int) -> None:
        self.progress.update(
            self.task, description=description, total=max(total, completed), completed=completed
        )
        self.progress.start()

    def advance(self, offsets: int, events: int) -> None:
        t = self.progress.tasks[0]
        done = t.completed + offsets
        total = t.total if t.total is not None and t.total >= done else done
        self.progress.update(self.task, completed=done, total=total, rate=self.rate.add(events))

    def stop(self) -> None:
        self.progress.stop()


class LineView:
    """A line every ``every`` seconds: for logs and terminals that are not."""

    def __init__(self, console: Console, every: float = 5.0) -> None:
        self.console = console
        self.every = every
        self.description = "backfill"
        self.total = 0
        self.done = 0
        self.rate = _Rate()
        self.speed = 0.0
        self.last = 0.0

    def start(self, description: str, total: int, completed: int) -> None:
        self.description, self.total, self.done = description, total, completed
        self.last = time.monotonic()

    def advance(self, offsets: int, events: int) -> None:
        self.done += offsets
        self.total = max(self.total, self.done)
        self.speed = self.rate.add(events)
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self._line()

    def _line(self) -> None:
        eta = (self.total - self.done) / self.speed if self.speed > 0 else None
        self.console.print(
            f"{self.description}: {self.done}/{self.total} records, {self.speed:,.0f} events/s"
            + (f", ETA {eta:.0f}s" if eta is not None else "")
        )

    def stop(self) -> None:
        return None


class NoView:
    def start(self, description: str, total: int, completed: int) -> None:
        return None

    def advance(self, offsets: int, events: int) -> None:
        return None

    def stop(self) -> None:
        return None


def make_view(console: Console, *, enabled: bool = True) -> ProgressView:
    if not enabled:
        return NoView()
    if console.is_terminal:
        return RichView(console)
    return LineView(console)
