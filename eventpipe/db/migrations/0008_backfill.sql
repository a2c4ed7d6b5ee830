-- Backfill jobs (eventpipe.backfill): one row per job, its per-partition (or
-- per-table) progress, and the ledger of what backfills delivered to sinks that do
-- not deduplicate by themselves.
create table if not exists eventpipe.backfill_jobs (
    id text primary key,
    pipeline text not null,
    mode text not null check (mode in ('dry_run', 'shadow', 'live')),
    source text not null check (source in ('topic', 'table')),
    from_time timestamptz not null,
    to_time timestamptz not null,             -- effective end: min(--to, job creation)
    requested_to timestamptz not null,
    options jsonb not null default '{}',
    consumer_group text,
    status text not null default 'running'
        check (status in ('running', 'completed', 'failed', 'interrupted')),
    runs integer not null default 1,
    active_seconds double precision not null default 0,
    report jsonb,
    error text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    finished_at timestamptz
);
create index if not exists backfill_jobs_pipeline on eventpipe.backfill_jobs (pipeline, created_at);

-- Topic source: one row per (topic, partition), next_offset = the next offset to read.
-- Table source: one row per table (partition -1), next_offset = rows read so far,
-- last_key = text forms of the last key read (keyset chunks resume after it).
create table if not exists eventpipe.backfill_progress (
    job_id text not null references eventpipe.backfill_jobs (id) on delete cascade,
    stream text not null,
    partition integer not null,
    start_offset bigint not null default 0,
    next_offset bigint not null default 0,
    estimate bigint not null default 0,
    last_key jsonb,
    done boolean not null default false,
    read bigint not null default 0,
    outside bigint not null default 0,
    outputs bigint not null default 0,
    delivered bigint not null default 0,
    dead_lettered bigint not null default 0,
    duplicates bigint not null default 0,
    filtered bigint not null default 0,
    sinks jsonb not null default '{}',
    updated_at timestamptz not null default now(),
    primary key (job_id, stream, partition)
);

-- (sink, source, id) of input events a live backfill delivered to a sink that does
-- not deduplicate on its own (postgres insert mode, outbox, topic, http).  For the
-- postgres and outbox sinks the row is written in the same transaction as the
-- sink's rows.  `sink` is the live sink's label, <pipeline>/<sink name>.
create table if not exists eventpipe.backfill_delivered (
    sink text not null,
    source text not null,
    id text not null,
    job_id text not null,
    delivered_at timestamptz not null default now(),
    primary key (sink, source, id)
);
