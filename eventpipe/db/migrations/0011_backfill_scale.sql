-- Backfill at scale (issues 15 and 19): dead letters a backfill met again (their
-- origin was dead-lettered before, perhaps replayed), counted instead of written.
alter table eventpipe.backfill_progress
    add column if not exists already_dead_lettered bigint not null default 0,
    add column if not exists already_replayed bigint not null default 0;
