"""A running pipeline's :class:`~eventpipe.status.ComponentStatus`, from what its
runtime and batch processor count (no I/O: the lag is the last lag report's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventpipe.status import ComponentStatus, State

if TYPE_CHECKING:
    from .runtime import PipelineRuntime


def pipeline_status(rt: PipelineRuntime, *, stopped: bool = False) -> ComponentStatus:
    processor = rt.processor
    assert processor is not None
    children = [sink.status() for sink in rt.sinks]
    state: State = "running"
    if rt.failure is not None:
        state = "failed"
    elif stopped or rt.app is None:
        state = "stopped"
    elif any(c.state == "paused" for c in children):
        state = "paused"  # a sink's circuit is open: its partitions wait
    elif rt.stalled:
        state = "stalled"
    elif not rt.assigned():
        state = "waiting"  # no source partition assigned to this worker
    st = processor.activity.status(
        name=rt.name,
        kind="pipeline",
        type="pipeline",
        state=state,
        lag=dict(rt.lag),
        details={
            "group": rt.spec.group,
            "topics": list(rt.spec.source.topics),
            "dead_letter_topic": rt.spec.dlq_topic,
            "batches": rt.batches,
            "stalled": sorted(rt.stalled),
        },
        children=children,
    )
    st.dead_letters = dict(processor.dlq.written)
    if rt.failure is not None and st.last_error is None:
        processor.activity.failed(rt.failure)
        st.last_error = processor.activity.last_error
    return st
