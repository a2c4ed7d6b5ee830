-- Marks and ledgers keyed by (topic, partition, offset) belong to one incarnation
-- of a topic (ARCHITECTURE.md section 5): the topic's id (Kafka topic ids,
-- Metadata v10+) when the broker gives one, written with the mark.  A topic
-- deleted and created again under the same name has a new id, so its records are
-- never taken for ones the mark already covers.  null: written before this
-- migration, or by a broker without topic ids (the partition's end offset is the
-- check then).  In the DLQ ledgers the nil id (all zeros) marks rows of an
-- earlier incarnation that an operator let go (`on_topic_reset: reset`).
alter table eventpipe.sink_offsets add column if not exists topic_id uuid;
alter table eventpipe.dlq_replays add column if not exists topic_id uuid;
alter table eventpipe.dlq_discards add column if not exists topic_id uuid;
alter table eventpipe.backfill_progress add column if not exists topic_id uuid;
