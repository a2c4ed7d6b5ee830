-- Core objects every eventpipe part may use.
create schema if not exists eventpipe;

-- Consumed (topic, partition, offset) high-water marks written in the same
-- transaction as a sink's rows (ARCHITECTURE.md section 5).
create table if not exists eventpipe.sink_offsets (
    sink text not null,
    topic text not null,
    partition integer not null,
    "offset" bigint not null,
    updated_at timestamptz not null default now(),
    primary key (sink, topic, partition)
);
