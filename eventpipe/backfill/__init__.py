"""Time-ranged backfill: push a range of history through a pipeline again.

    eventpipe backfill --pipeline P --from T1 --to T2 [--mode dry_run|shadow|live]
        [--source topic|table] [--rate N/s] [--concurrency N] [--workers N|auto]
        [--resume JOB_ID]
        [--time-column COL] [--table SCHEMA.TABLE] [--force] [--allow-overwrite] [--json]

Modules: ``options`` (arguments, checked before anything connects), ``job``
(the job record and per-partition progress in Postgres), ``topic_reader`` and
``table_reader`` (the two sources), ``modes`` (the pipeline's steps and
validation with mode-specific sinks), ``sinks`` (those sinks and the delivery
checks), ``dead_letters`` (dead letters met before), ``shadow`` and
``shadow_tables`` (the comparisons), ``rate``, ``progress``, ``report``,
``runner`` (the job loop) and ``cli``.

Sources
-------
* topic: each partition of the pipeline's source topics from
  ``offsets_for_times(T1)`` until its records pass T2, records outside
  ``[T1, T2)`` skipped; read by hand-assigned consumers in the job's own group
  ``<group>.backfill.<job>``, so the live pipeline's group is never touched.
* table: the tables of the ``postgres_cdc`` sources whose topics the pipeline
  reads, in keyset chunks filtered on ``--time-column``, as ``op: r`` change
  events built by the CDC source's event builder, with deterministic ids.

Modes
-----
* dry_run: steps and validation run; outputs are counted and sampled per sink
  and dead letters sampled; nothing is written anywhere but the job record.
* shadow: outputs go to ``<pipeline>.shadow`` (tagged with the job id); dead
  letters are only sampled.  At the end they are compared by (source, id) with
  what the live pipeline's topic sinks wrote for the same source events:
  counts of same / missing / extra / changed, with examples and, for changed
  events, the differing fields (:mod:`.shadow`).  The rows postgres and outbox sinks would
  write go to scratch tables and are compared with the tables' current rows:
  added / changed / unchanged (and kept by ``order_by``), with examples
  (:mod:`.shadow_tables`).
* live: outputs go to the pipeline's real sinks, dead letters to its
  dead-letter topic.

Exactly-once effect in live mode (ARCHITECTURE.md section 5, "sinks dedupe on
event id")
-----------------------------------------------------------------------------
A backfill re-reads offsets the live pipeline's sinks have marked, so its sinks
must neither be silently skipped by those marks nor write twice:

1. Marks per job.  The real sinks are bound as pipeline ``<pipeline>@<job>``, so
   a postgres / outbox sink keeps the job's own offset marks in
   ``eventpipe.sink_offsets`` (in the transaction of its rows, as always): a
   batch written just before a crash is skipped on ``--resume``.  The live
   marks never hide a record from a backfill.  The job's marks are deleted when
   it completes.
2. Keyed sinks get everything again.  A postgres sink in ``upsert`` / ``delete``
   mode dedupes on its key by construction, so a backfill re-applies every
   record: that is how a fixed transform corrects rows.  An upsert sink's
   ``order_by`` column keeps the newer rows the live pipeline wrote since; a live
   backfill into an upsert sink without one refuses to start unless
   ``--allow-overwrite``.
3. Other sinks (postgres ``insert``, outbox, topic, http) receive each event at
   most once, live and backfills together.  Before a record goes to such a
   sink the backfill skips it (and counts it as a duplicate) when

   - the live pipeline has done it: at or below the live sink's mark
     (postgres, outbox) or below the live consumer group's committed offset
     (topic, http); records the live pipeline dead-lettered count as done too,
     replay those with ``eventpipe dlq replay``;
   - an earlier backfill delivered it: the ledger ``eventpipe.backfill_delivered``
     keyed by (live sink label, event source, event id).  For postgres and
     outbox sinks the ledger row is written in the sink's own transaction
     (the sink's ``_also_write`` hook), so rows and ledger always agree; for
     topic and http sinks it is written after the sink returned, which is
     at-least-once with the same CloudEvent ids (consumers dedupe on them).

   Hence a live backfill can be re-run, or resumed after ``kill -9``, without
   duplicate rows.  One live backfill per pipeline runs at a time (advisory
   lock), so these checks cannot race each other.  ``--force`` drops the live
   and ledger checks (for a sink that lost data); the job's own marks stay.
4. Dead letters are written once per origin: a record that fails again, whose
   dead letter (the live pipeline's or an earlier backfill's) is already on the
   dead-letter topic, is counted as ``already_dead_lettered`` and not written
   again (:mod:`.dead_letters`; all modes count them so).
5. Within the run, an event seen twice (same source and id) goes through once,
   as in the live pipeline (its ``state.dedup_window``, in memory here).

Workers and memory
------------------
``--workers N|auto`` splits the partitions (or a table's key ranges, planned as
N of about the same size) left over N worker processes (:mod:`.workers`), which
share the job record: progress and the report are the sums of its rows, and
``--resume`` continues with any number of workers.
Each process holds at most ``--concurrency`` batches of ``batch.max_records``
records at once (the report's ``window``), and its in-memory dedup tables at most
``modes.DEDUP_KEYS`` keys, whatever the range.

Jobs
----
A job row plus one progress row per partition (or table), updated after every
batch once it is in the sinks or the dead-letter topic; ``--resume JOB_ID``
continues from there (the batch in flight at a crash is read again and
recognised as above).  A session advisory lock keeps a job to one process.
``--to`` is capped at the job's creation time.  ``aggregate`` steps are refused
in live mode (a backfill starts with empty window state); ``dedup`` steps dedupe
within the run.
"""
