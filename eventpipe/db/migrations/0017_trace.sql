-- The event trace index (eventpipe/trace): answers "what happened to event X"
-- without a row per event.  Both tables are written by one bounded, asynchronous
-- writer per process (COPY, about once a second), which merges what it holds per
-- topic partition into one row.  Ids are kept as 4-byte fingerprints (CRC-32 of the
-- CloudEvent id, little-endian), one per record, in record order: a query finds
-- the rows whose fingerprints hold the id's (position()), takes the record's exact
-- offset from the fingerprint's place, and checks the record itself in Kafka, so a
-- collision costs one fetch and never a wrong answer.  Rows are pruned after
-- trace.retention through the BRIN indexes on `at` (rows arrive in time order).

-- Where records landed: every acknowledged record batch a producer of the service
-- wrote (publish API, webhooks, CDC / outbox / spool relays, topic sinks, dead
-- letters).  `batches` holds base offset and record count of each batch the row
-- covers, in the order of `fps`.
create table if not exists eventpipe.trace_produced (
    at timestamptz not null,
    topic text not null,
    partition integer not null,
    via text not null,
    batches bigint[] not null,
    fps bytea not null
);
create index if not exists trace_produced_at on eventpipe.trace_produced
    using brin (at) with (autosummarize = on);

-- What a pipeline did with the records of a partition it read: one letter per
-- record in `outcomes` (d delivered to every sink, f filtered, u duplicate, x
-- dead-lettered), at offsets first_offset..last_offset, or at `offsets` when they
-- are not contiguous.  `notes` holds, by offset, the stage and step of a dead
-- letter and the output ids where they differ from the input id; `sinks` the
-- pipeline's sinks at the time.
create table if not exists eventpipe.trace_read (
    at timestamptz not null,
    pipeline text not null,
    topic text not null,
    partition integer not null,
    first_offset bigint not null,
    last_offset bigint not null,
    offsets bigint[],
    outcomes text not null,
    fps bytea not null,
    notes jsonb,
    sinks text[] not null
);
create index if not exists trace_read_at on eventpipe.trace_read
    using brin (at) with (autosummarize = on);
create index if not exists trace_read_place on eventpipe.trace_read (topic, partition, first_offset);

-- The trace finds an event's dead-letter replays and discards by its id.
create index if not exists dlq_replays_event_id on eventpipe.dlq_replays (event_id);
create index if not exists dlq_discards_event_id on eventpipe.dlq_discards (event_id);
