-- Dead-letter values too large for the broker (dlq/payloads.py).  The dead letter on
-- the topic then carries no value and names its row here in the header
-- eventpipe.dlq.payload.ref (the value's SHA-256, hex); `eventpipe dlq show` and
-- `dlq replay` read it back, so no dead letter loses the original bytes.  Rows are
-- immutable and shared by identical values; delete old ones with the topic's
-- retention in mind (created_at).
create table if not exists eventpipe.dlq_payloads (
    ref text primary key,
    value bytea not null,
    size bigint not null,
    created_at timestamptz not null default now()
);
create index if not exists dlq_payloads_created on eventpipe.dlq_payloads (created_at);
