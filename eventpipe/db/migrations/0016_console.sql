-- Who did what to dead letters, and why (the console, the CLI's --by / --reason,
-- the admin API's "by" / "reason"): every replay and discard records its operator;
-- a replay records its reason too (a discard always had one).  null: recorded
-- before this migration.
alter table eventpipe.dlq_replays add column if not exists who text;
alter table eventpipe.dlq_replays add column if not exists reason text;
alter table eventpipe.dlq_discards add column if not exists who text;

-- The web console's audit log (eventpipe/console): every action that changes
-- something (a replay, a discard) and every login and logout, with the operator's
-- name, the reason given and how it ended.  A row is written before the action
-- runs (outcome 'started') and updated after, so an action that fails half-way or
-- crashes the process is still on record.
create table if not exists eventpipe.console_actions (
    id bigserial primary key,
    at timestamptz not null default now(),
    who text not null,
    action text not null,
    target text,
    reason text,
    detail jsonb not null default '{}'::jsonb,
    outcome text not null default 'started'
);
create index if not exists console_actions_at on eventpipe.console_actions (at desc);
