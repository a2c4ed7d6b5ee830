-- Schema registry (eventpipe.schema_registry): schemas with global ids, subject
-- versions pointing at them, and per-subject / global compatibility and mode.

-- Ids come from a sequence, so an id is never handed out twice, even after a
-- permanent delete.  A schema row is kept once created: re-registering the same
-- schema (same fingerprint) gets the same id back.
create sequence if not exists eventpipe.sr_schema_id_seq as integer start 1;

create table if not exists eventpipe.sr_schemas (
    id integer primary key default nextval('eventpipe.sr_schema_id_seq'),
    schema_type text not null check (schema_type in ('AVRO', 'JSON')),
    -- the schema as stored and returned (compact JSON)
    schema_text text not null,
    -- [{"name", "subject", "version"}], in the order given
    refs jsonb not null default '[]'::jsonb,
    -- sha256 of type, normalised schema and references: one id per distinct schema
    fingerprint text not null unique,
    created_at timestamptz not null default now()
);
alter sequence eventpipe.sr_schema_id_seq owned by eventpipe.sr_schemas.id;

create table if not exists eventpipe.sr_subject_versions (
    subject text not null check (subject <> ''),
    version integer not null check (version > 0),
    schema_id integer not null references eventpipe.sr_schemas (id),
    deleted boolean not null default false,
    created_at timestamptz not null default now(),
    primary key (subject, version)
);
create index if not exists sr_subject_versions_schema_id
    on eventpipe.sr_subject_versions (schema_id);
create index if not exists sr_schemas_refs on eventpipe.sr_schemas using gin (refs);

-- subject '' holds the global settings; null = not set at this level.
create table if not exists eventpipe.sr_config (
    subject text primary key,
    compatibility text check (compatibility in (
        'NONE', 'BACKWARD', 'BACKWARD_TRANSITIVE', 'FORWARD', 'FORWARD_TRANSITIVE',
        'FULL', 'FULL_TRANSITIVE')),
    mode text check (mode in ('READWRITE', 'READONLY', 'IMPORT')),
    updated_at timestamptz not null default now()
);
