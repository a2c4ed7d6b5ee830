"""Prometheus metrics shared across the service (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUESTS = Counter(
    "eventpipe_http_requests_total", "HTTP requests served", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "eventpipe_http_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS
)
HTTP_MALFORMED = Counter(
    "eventpipe_http_malformed_requests_total",
    "Requests refused with 400 because they are not valid HTTP/1.1, by parser error",
    ["reason"],
)
HTTP_HEADER_TIMEOUTS = Counter(
    "eventpipe_http_header_timeouts_total",
    "Connections closed because a request head did not arrive within service.header_timeout_s",
)
EVENTS_PUBLISHED = Counter(
    "eventpipe_events_published_total", "Events acknowledged by the broker", ["topic"]
)
PUBLISH_SECONDS = Histogram(
    "eventpipe_publish_seconds",
    "Time from send to broker acknowledgement, per publish call",
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter("eventpipe_errors_total", "Errors by class", ["error_class"])

# Ingestion sources (webhooks, foreign Kafka topics): labelled by source name.
WEBHOOK_REQUESTS = Counter(
    "eventpipe_webhook_requests_total",
    "Webhook requests by source and status",
    ["source", "status"],
)
WEBHOOK_VERIFY_FAILURES = Counter(
    "eventpipe_webhook_verification_failures_total",
    "Webhook requests refused as not authentic, by reason",
    ["source", "reason"],
)
INGEST_SECONDS = Histogram(
    "eventpipe_ingest_seconds",
    "Receipt to broker acknowledgement (or spool commit), per source",
    ["source"],
    buckets=LATENCY_BUCKETS,
)
WEBHOOK_STAGE_SECONDS = Histogram(
    "eventpipe_webhook_stage_seconds",
    "Time a webhook request waited on its dedup check (dedup) and on the broker's "
    "acknowledgement (produce)",
    ["source", "stage"],
    buckets=LATENCY_BUCKETS,
)
DEDUP_HITS = Counter(
    "eventpipe_webhook_dedup_hits_total", "Deliveries answered as already stored", ["source"]
)
WEBHOOK_LATE_ACKS = Counter(
    "eventpipe_webhook_late_acks_total",
    "Requests answered 503 whose write the broker acknowledged later (ids then recorded)",
    ["source"],
)
WEBHOOK_SPOOLED = Counter(
    "eventpipe_webhook_spooled_total", "Records written to the Postgres spool", ["source"]
)
WEBHOOK_RELAYED = Counter(
    "eventpipe_webhook_relayed_total", "Spooled records relayed to the broker", ["source"]
)
SOURCE_RECORDS = Counter(
    "eventpipe_source_records_total",
    "Records a topic source read, by outcome (produced, dead_lettered)",
    ["source", "outcome"],
)


# ------------------------------------------------------------------ pipelines
PIPELINE_EVENTS_IN = Counter(
    "eventpipe_pipeline_events_in_total", "Records consumed by a pipeline", ["pipeline"]
)
PIPELINE_EVENTS_OUT = Counter(
    "eventpipe_pipeline_events_out_total", "Events a sink wrote", ["pipeline", "sink"]
)
PIPELINE_DEAD_LETTERS = Counter(
    "eventpipe_pipeline_dead_letters_total",
    "Records written to the pipeline's dead-letter topic",
    ["pipeline", "stage"],
)
PIPELINE_DUPLICATES = Counter(
    "eventpipe_pipeline_duplicates_total",
    "Records skipped because their (source, id) was already processed",
    ["pipeline"],
)
PIPELINE_STEP_SECONDS = Histogram(
    "eventpipe_pipeline_step_seconds",
    "Time a pipeline stage took for one batch",
    ["pipeline", "step"],
    buckets=LATENCY_BUCKETS,
)
PIPELINE_SINK_BATCH_SECONDS = Histogram(
    "eventpipe_pipeline_sink_batch_seconds",
    "Time one sink write of a batch took",
    ["pipeline", "sink"],
    buckets=LATENCY_BUCKETS,
)
PIPELINE_SINK_ERRORS = Counter(
    "eventpipe_pipeline_sink_errors_total",
    "Failed sink writes by error class",
    ["pipeline", "sink", "error_class"],
)
PIPELINE_SINK_BREAKER_OPEN = Gauge(
    "eventpipe_pipeline_sink_breaker_open",
    "1 while the sink's circuit breaker is open (the partition is paused)",
    ["pipeline", "sink"],
)
PIPELINE_CONSUMER_LAG = Gauge(
    "eventpipe_pipeline_consumer_lag",
    "Records between the pipeline's position and the end of the partition",
    ["pipeline", "topic", "partition"],
)
PIPELINE_BATCH_SIZE = Histogram(
    "eventpipe_pipeline_batch_records",
    "Records per processed batch",
    ["pipeline"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)

# Postgres CDC (connectors/postgres_cdc) and the outbox relay (connectors/outbox).
CDC_EVENTS = Counter(
    "eventpipe_cdc_events_total", "Change events acknowledged by the broker", ["source"]
)
CDC_SLOT_LAG_BYTES = Gauge(
    "eventpipe_cdc_slot_lag_bytes", "WAL bytes the slot has not confirmed", ["source"]
)
CDC_LAG_SECONDS = Gauge(
    "eventpipe_cdc_lag_seconds",
    "Seconds since the reader last read the slot to its end",
    ["source"],
)
CDC_LAST_COMMIT = Gauge(
    "eventpipe_cdc_last_commit_timestamp_seconds",
    "Commit time of the last acknowledged transaction",
    ["source"],
)
CDC_STALLED = Gauge(
    "eventpipe_cdc_stalled", "1 while the slot lags and does not advance", ["source"]
)
CDC_ACTIVE = Gauge("eventpipe_cdc_active", "1 when this process is the slot's reader", ["source"])
CDC_SNAPSHOT_ROWS = Counter(
    "eventpipe_cdc_snapshot_rows_total", "Snapshot rows acknowledged by the broker", ["source"]
)
CDC_DEAD_LETTERS = Counter(
    "eventpipe_cdc_dead_letters_total", "Rows that could not be encoded (dead letters)", ["source"]
)
OUTBOX_PUBLISHED = Counter(
    "eventpipe_outbox_published_total",
    "Outbox events on their topics, acknowledged by the broker (not dead letters)",
    ["relay"],
)

# The event trace index (eventpipe/trace).
TRACE_DROPPED = Counter(
    "eventpipe_trace_dropped_total",
    "Records whose trace index entry (a record batch, a pipeline batch) was dropped "
    "because the writer's queue was full: those events cannot be traced",
    ["kind"],
)
TRACE_ROWS = Counter("eventpipe_trace_rows_total", "Trace index rows written, by table", ["table"])
TRACE_FLUSH_SECONDS = Histogram(
    "eventpipe_trace_flush_seconds",
    "Time one write of the trace index took",
    buckets=LATENCY_BUCKETS,
)

# ------------------------------------------------------------------ the process
EVENT_LOOP_LAG_SECONDS = Histogram(
    "eventpipe_event_loop_lag_seconds",
    "How late the event loop ran a timer (sampled every 100 ms): time every task waited",
    buckets=LATENCY_BUCKETS,
)
GC_PAUSE_SECONDS = Histogram(
    "eventpipe_gc_pause_seconds",
    "Pauses of the cyclic garbage collector, by generation",
    ["generation"],
    buckets=LATENCY_BUCKETS,
)
