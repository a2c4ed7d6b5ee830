"""Emitting: a reader's records go out with the dead letters gathered while they
were built, and the slot advances only past what the broker acknowledged.

Decoding and the snapshot window hand their dead letters to :meth:`Emitter.dead_letter`;
the next :meth:`Emitter.publish` sends them with the records (:mod:`.publishing`:
all acknowledged, or an exception and nothing advances).  Once a batch is
acknowledged and settled, :meth:`Emitter.acknowledged` sets the LSN the slot may
advance to; the reader's next slot read moves it there (one round trip) and
reports back with :meth:`Emitter.advanced`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from eventpipe import metrics
from eventpipe.dlq.record import DeadLetter

from .events import Out
from .publishing import RecordPublisher


class Emitter:
    def __init__(self, out: RecordPublisher) -> None:
        self.out = out
        self.name = out.name
        self.position = 0  # the slot's confirmed LSN, as this reader moved it
        self.advance_to: int | None = None  # acknowledged up to here; the next read moves
        self.progressed = asyncio.Event()  # the slot was advanced at least once
        self.events_total = 0
        self._dead: list[DeadLetter] = []

    def dead_letter(self, letter: DeadLetter) -> None:
        """Send ``letter`` with the next records."""
        self._dead.append(letter)

    async def ensure_topics(self, topics: Iterable[str]) -> None:
        await self.out.ensure_topics(topics)

    async def publish(self, outs: list[Out]) -> int:
        """Every record and pending dead letter acknowledged, or an exception; how many
        of ``outs`` are on their topics (not dead letters)."""
        dead, self._dead = self._dead, []
        return await self.out.publish(outs, dead)

    def acknowledged(self, target: int, events: int) -> None:
        """Everything before ``target`` is acknowledged and settled."""
        if target > self.position:
            self.advance_to = target
        if events:
            metrics.CDC_EVENTS.labels(source=self.name).inc(events)
            self.events_total += events

    def advanced(self, target: int) -> None:
        """The slot was advanced to ``target``."""
        self.advance_to = None
        self.position = max(self.position, target)
        self.progressed.set()
