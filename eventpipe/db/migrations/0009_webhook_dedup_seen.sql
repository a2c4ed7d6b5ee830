-- The dedup window is pruned through a BRIN index on seen_at (ids arrive in time
-- order, so block ranges follow time), and the primary key is the only B-tree.
-- The (source, seen_at) B-tree it replaces also matched the per-request check
-- (source = $1 and delivery_id = any($2)): with statistics that did not know a
-- new source yet, the planner walked it over every id of the source's window,
-- on every check, instead of probing the primary key.  A BRIN index cannot serve
-- that check at all, costs inserts almost nothing and lets a refreshed id's
-- update stay HOT.
drop index if exists eventpipe.webhook_dedup_source_seen;
create index if not exists webhook_dedup_seen_brin on eventpipe.webhook_dedup
    using brin (seen_at) with (autosummarize = on);
