-- What operators did with dead letters: every replay (kept, so a record is not
-- replayed twice unless forced) and every discard (with its reason).
create table if not exists eventpipe.dlq_replays (
    id bigserial primary key,
    dlq_topic text not null,
    partition integer not null,
    "offset" bigint not null,
    event_id text,
    target_topic text not null,
    target_partition integer,
    target_offset bigint,
    patch text,
    forced boolean not null default false,
    replayed_at timestamptz not null default now()
);
create index if not exists dlq_replays_record on eventpipe.dlq_replays (dlq_topic, partition, "offset");

create table if not exists eventpipe.dlq_discards (
    dlq_topic text not null,
    partition integer not null,
    "offset" bigint not null,
    event_id text,
    reason text not null,
    discarded_at timestamptz not null default now(),
    primary key (dlq_topic, partition, "offset")
);
