-- Tamper evidence (README, "Audit"). Each event row carries `hash`, the hex SHA-256 of
--   previous hash of the stream (32 zero bytes for sequence 1)
--   || lp(aggregate_type) || lp(aggregate_id) || be64(sequence)
--   || lp(event_type) || lp(event_version) || lp(payload) || lp(metadata)
-- where lp(x) = be64(byte length of x) || the UTF-8 bytes of x, and payload and metadata
-- are the stored JSON as text. The trigger below computes it at append; it reads only
-- the previous event of the same stream, so writers never wait on one another.

alter table events add column hash text;

create or replace function parley_lp(t text) returns bytea
language sql immutable as $$ select int8send(octet_length(t)::bigint) || convert_to(t, 'UTF8') $$;

create or replace function events_stream_hash() returns trigger
language plpgsql as $$
declare
    prev bytea;
begin
    if new.sequence = 1 then
        prev := decode(repeat('00', 32), 'hex');
    else
        select decode(hash, 'hex') into prev from events
         where aggregate_type = new.aggregate_type and aggregate_id = new.aggregate_id
           and sequence = new.sequence - 1;
        if prev is null then
            raise exception 'event % of stream %/% has no hashed predecessor',
                new.sequence, new.aggregate_type, new.aggregate_id;
        end if;
    end if;
    new.hash := encode(sha256(prev
        || parley_lp(new.aggregate_type) || parley_lp(new.aggregate_id) || int8send(new.sequence)
        || parley_lp(new.event_type) || parley_lp(new.event_version)
        || parley_lp(new.payload::text) || parley_lp(new.metadata::text)), 'hex');
    return new;
end $$;

-- Existing rows, stream by stream in order, before the append-only rule resumes.
alter table events disable trigger events_append_only;
do $$
declare
    r record;
    prev bytea;
    last_type text := null;
    last_id text := null;
begin
    for r in select * from events order by aggregate_type, aggregate_id, sequence loop
        if last_type is distinct from r.aggregate_type or last_id is distinct from r.aggregate_id then
            prev := decode(repeat('00', 32), 'hex');
        end if;
        prev := sha256(prev
            || parley_lp(r.aggregate_type) || parley_lp(r.aggregate_id) || int8send(r.sequence)
            || parley_lp(r.event_type) || parley_lp(r.event_version)
            || parley_lp(r.payload::text) || parley_lp(r.metadata::text));
        update events set hash = encode(prev, 'hex')
         where aggregate_type = r.aggregate_type and aggregate_id = r.aggregate_id and sequence = r.sequence;
        last_type := r.aggregate_type;
        last_id := r.aggregate_id;
    end loop;
end $$;
alter table events enable trigger events_append_only;

alter table events alter column hash set not null;

create trigger events_stream_hash
    before insert on events
    for each row execute function events_stream_hash();

create or replace view events_log as
select txid, position, event_id::text as event_id, aggregate_type, aggregate_id, sequence,
       event_type, event_version, payload::text as payload, metadata::text as metadata, hash
  from events;

-- The global chain (projector `audit_chain`): every event in global order, each link
-- SHA-256(previous link || the event's stream hash).
create table audit_chain (
    txid        bigint not null,
    position    bigint not null,
    event_id    text   not null,
    stream_hash text   not null,
    chain_hash  text   not null,
    primary key (txid, position)
);
create index audit_chain_by_hash on audit_chain (chain_hash);
