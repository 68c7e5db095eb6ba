-- The append-only event store used by postgres-es, plus Parley's global order.
--
-- postgres-es inserts only (aggregate_type .. metadata); every other column is filled
-- by its default. `txid` records the writing transaction so log readers can order by
-- (txid, position) and read only below the oldest running transaction: see
-- projections/src/log.rs for why a bigserial alone lets a tail skip events.

-- UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits; PostgreSQL 15 has no
-- built-in generator.
create or replace function parley_uuid_v7() returns uuid
language plpgsql volatile as $$
declare
    ms    bigint := floor(extract(epoch from clock_timestamp()) * 1000);
    bytes bytea  := substring(int8send(ms) from 3 for 6)
                    || substring(uuid_send(gen_random_uuid()) from 7 for 10);
begin
    bytes := set_byte(bytes, 6, (get_byte(bytes, 6) & 15) | 112);
    bytes := set_byte(bytes, 8, (get_byte(bytes, 8) & 63) | 128);
    return encode(bytes, 'hex')::uuid;
end $$;

create table events (
    position       bigserial   not null,
    txid           bigint      not null default (pg_current_xact_id()::text::bigint),
    event_id       uuid        not null default parley_uuid_v7(),
    aggregate_type text        not null,
    aggregate_id   text        not null,
    sequence       bigint      not null check (sequence >= 1),
    event_type     text        not null,
    event_version  text        not null,
    payload        jsonb       not null,
    metadata       jsonb       not null,
    recorded_at    timestamptz not null default now(),
    primary key (aggregate_type, aggregate_id, sequence)
);

create unique index events_global_order on events (txid, position);
create unique index events_event_id on events (event_id);

-- The log as readers see it: text columns, so one reader serves both backends.
create view events_log as
select txid, position, event_id::text as event_id, aggregate_type, aggregate_id, sequence,
       event_type, event_version, payload::text as payload, metadata::text as metadata
  from events;

-- Events are never changed once appended.
create or replace function events_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'the event log is append-only (% refused)', tg_op;
end $$;

create trigger events_append_only
    before update or delete on events
    for each row execute function events_append_only();

create table snapshots (
    aggregate_type   text   not null,
    aggregate_id     text   not null,
    last_sequence    bigint not null check (last_sequence >= 0),
    current_snapshot bigint not null check (current_snapshot >= 0),
    payload          jsonb  not null,
    primary key (aggregate_type, aggregate_id)
);

create table projection_checkpoints (
    name     text   primary key,
    version  bigint not null,
    txid     bigint not null,
    position bigint not null
);
