"""Shadow comparison helpers, and a dry-run lane: the pipeline's steps and validation
with counting sinks, run on records in memory (no broker, no database)."""

from __future__ import annotations

from eventpipe.backfill.dead_letters import KnownDeadLetters, RecognisedDeadLetters
from eventpipe.backfill.modes import Lane, make_stages
from eventpipe.backfill.shadow import base_id, differences, live_topics_of
from eventpipe.backfill.sinks import CapturedDeadLetters, DryRunSink, Outcome, Samples
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.kafka import to_kafka
from eventpipe.pipelines.batch import BatchProcessor, Record
from eventpipe.pipelines.retry import RetryPolicy
from eventpipe.pipelines.spec import PipelineSpec, build_segments, build_sinks, build_validate
from eventpipe.publisher import Publisher
from eventpipe.service.catalog import CATALOG


def test_differences_name_fields() -> None:
    live = {"id": "a", "type": "t", "data": {"n": 1, "x": 2}, "traceparent": "00-1"}
    shadow = {"id": "a", "type": "t2", "data": {"n": 1, "x": 3, "y": 0}}
    assert differences(live, shadow) == [
        {"field": "data.x", "live": 2, "shadow": 3},
        {"field": "data.y", "live": None, "shadow": 0},
        {"field": "type", "live": "t", "shadow": "t2"},
    ]
    assert differences(live, {**live, "traceparent": "00-2"}) == []


def test_ids_and_topics() -> None:
    assert base_id("e1:0") == "e1" and base_id("e1") == "e1"
    entries, problems = build_sinks(
        [{"topic": {"topic": "a.out"}}, {"topic": {}}, {"http": {"url": "http://x"}}],
        path="sinks",
        sinks=CATALOG.sinks,
    )
    assert not problems
    assert live_topics_of(entries, {"routed"}) == ["a.out", "routed"]


def _record(i: int, ev: CloudEvent) -> Record:
    m = to_kafka(ev)
    return Record(i, "src", 0, 100 + i, 0, m.key, m.value, m.headers)


async def test_dry_run_lane_counts_and_samples() -> None:
    spec = PipelineSpec.model_validate(
        {
            "name": "p",
            "source": {"topics": ["src"]},
            "validate_input": {"schema": {"type": "object", "required": ["n"]}},
            "steps": [{"filter": ".data.n != 2"}, {"jq": "{n, doubled: (.n * 2)}"}],
            "sinks": [
                {"postgres": {"table": "t", "columns": {"id": ".id", "v": ".data.doubled"}}},
                {"topic": {"topic": "out"}},
            ],
        }
    )
    segments, _ = build_segments(spec.steps, path="steps", resolve_schema=None)
    v_in, _ = build_validate(spec.validate_input, path="validate_input", resolve_schema=None)
    entries, _ = build_sinks(spec.sinks, path="sinks", sinks=CATALOG.sinks)
    samples = Samples(2)
    outcome = Outcome()
    letters = RecognisedDeadLetters(
        CapturedDeadLetters(Publisher(), "p.dlq", samples), KnownDeadLetters()
    )
    processor = BatchProcessor(
        pipeline="p",
        stages=make_stages(spec, segments),
        sinks=[DryRunSink(e, outcome, samples) for e in entries],
        dlq=letters,
        retry=RetryPolicy(spec.retry),
        validate_input=v_in,
    )
    events = [CloudEvent.create("t", "/s", {"n": i}, id=f"e{i}") for i in range(4)]
    events.append(CloudEvent.create("t", "/s", {"m": 1}, id="bad"))  # fails validation
    records = [_record(i, ev) for i, ev in enumerate(events)]
    records.append(Record(5, "src", 0, 105, 0, None, b"not an event", []))  # fails decode
    result = await Lane(processor, outcome, letters).process(records)
    c = result.counts
    assert (c.read, c.outputs, c.delivered, c.filtered, c.dead_lettered) == (6, 3, 3, 1, 2)
    assert result.sinks == {"postgres": {"delivered": 3}, "topic": {"delivered": 3}}
    pg = samples.outputs["postgres"]
    assert [d["row"] for d in pg] == [{"id": "e0", "v": 0}, {"id": "e1", "v": 2}]
    assert pg[0]["table"] == "t" and pg[0]["origin"] == "src:0:100"
    assert samples.outputs["topic"][0]["topic"] == "out"
    assert samples.outputs_per_sink == {"postgres": 3, "topic": 3}
    assert sorted(d["stage"] for d in samples.dead_letters) == ["decode", "validate"]
