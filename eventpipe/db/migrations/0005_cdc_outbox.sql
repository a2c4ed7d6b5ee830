-- Postgres CDC (connectors/postgres_cdc) and the transactional outbox (connectors/outbox).

-- Snapshots of captured tables, read in primary-key chunks between watermarks while
-- the log keeps flowing.  One row per table and request; progress is saved after
-- each chunk is acknowledged, so a restart resumes at the next chunk.
create table if not exists eventpipe.cdc_snapshots (
    id bigserial primary key,
    slot text not null,
    table_name text not null,
    where_clause text,
    kind text not null check (kind in ('initial', 'incremental')),
    status text not null default 'pending'
        check (status in ('pending', 'running', 'done', 'failed')),
    -- text forms of the key columns: the last row emitted / the largest row when started
    last_key jsonb,
    max_key jsonb,
    rows_read bigint not null default 0,
    error text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    finished_at timestamptz
);
create index if not exists cdc_snapshots_open
    on eventpipe.cdc_snapshots (slot, id) where status in ('pending', 'running');
create unique index if not exists cdc_snapshots_initial
    on eventpipe.cdc_snapshots (slot, table_name) where kind = 'initial';

-- Ad-hoc requests to a running CDC source (`eventpipe cdc snapshot` writes here).
create table if not exists eventpipe.cdc_signals (
    id bigserial primary key,
    slot text not null,
    type text not null check (type in ('snapshot')),
    data jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    processed_at timestamptz,
    result text
);
create index if not exists cdc_signals_open
    on eventpipe.cdc_signals (slot, id) where processed_at is null;

-- What each slot's active reader last did (`eventpipe cdc status`).
create table if not exists eventpipe.cdc_status (
    slot text primary key,
    source text not null,
    position text,
    last_event_id text,
    last_commit_at timestamptz,
    events_total bigint not null default 0,
    reader text,
    updated_at timestamptz not null default now()
);

-- The transactional outbox (Debezium outbox event router columns).  Applications
-- insert rows in their own transaction (eventpipe.connectors.outbox.api.publish);
-- the relay publishes them in commit order and deletes or marks them once the
-- broker acknowledged.  `seq` orders the polling relay.
create table if not exists eventpipe.outbox (
    seq bigint generated always as identity,
    id text primary key,
    aggregatetype text not null,
    aggregateid text not null,
    type text not null,
    payload jsonb,
    headers jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    published_at timestamptz
);
create index if not exists outbox_unpublished
    on eventpipe.outbox (seq) where published_at is null;
