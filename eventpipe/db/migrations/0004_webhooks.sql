-- Webhook ingestion (connectors/webhook): the broker-outage spool and the
-- delivery-id dedup window.

-- Requests stored while the broker is unavailable (`spool: postgres`), as the
-- encoded Kafka records; the relay publishes them in id order and deletes them
-- after the broker acknowledged.
create table if not exists eventpipe.webhook_spool (
    id bigint generated always as identity primary key,
    source text not null,
    topic text not null,
    event_id text not null,
    key bytea,
    value bytea,
    -- [[name, value], ...] (header values are UTF-8)
    headers jsonb not null default '[]'::jsonb,
    spooled_at timestamptz not null default now()
);
create index if not exists webhook_spool_source_id on eventpipe.webhook_spool (source, id);

-- Delivery ids stored recently, per source: a redelivery within the window is
-- answered without producing again.
create table if not exists eventpipe.webhook_dedup (
    source text not null,
    delivery_id text not null,
    seen_at timestamptz not null default now(),
    primary key (source, delivery_id)
);
create index if not exists webhook_dedup_source_seen on eventpipe.webhook_dedup (source, seen_at);
