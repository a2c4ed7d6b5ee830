-- The demo pipeline's table (run by `eventpipe dev` through embedded.init_sql).
create table if not exists public.demo_orders (
    id text primary key,
    customer text not null,
    total numeric not null,
    received_at timestamptz not null default now()
);
