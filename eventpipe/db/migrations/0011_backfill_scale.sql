-- Backfill at scale (issues 15 and 19).
-- Dead letters a backfill met again (their origin was dead-lettered before,
-- perhaps replayed), counted instead of written; and a table read in key ranges
-- (one progress row per range, partition -1, -2, ...) up to end_key, inclusive,
-- so worker processes share a table.
alter table eventpipe.backfill_progress
    add column if not exists already_dead_lettered bigint not null default 0,
    add column if not exists already_replayed bigint not null default 0,
    add column if not exists end_key jsonb;
