-- The stream-hash trigger, same hash, less work per row: the length prefixes are
-- written out instead of calling `parley_lp` six times (PL/pgSQL runs each call of a
-- SQL function as a query of its own: six executor start-ups per appended event), and
-- the previous hash is read as bytes in the same statement. Profiled under 32 sending
-- clients, the old form cost about a fifth of each append's time in PostgreSQL.
create or replace function events_stream_hash() returns trigger
language plpgsql as $$
declare
    prev     bytea;
    payload  text := new.payload::text;
    metadata text := new.metadata::text;
begin
    if new.sequence = 1 then
        prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
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
        || int8send(octet_length(new.aggregate_type)::bigint) || convert_to(new.aggregate_type, 'UTF8')
        || int8send(octet_length(new.aggregate_id)::bigint) || convert_to(new.aggregate_id, 'UTF8')
        || int8send(new.sequence)
        || int8send(octet_length(new.event_type)::bigint) || convert_to(new.event_type, 'UTF8')
        || int8send(octet_length(new.event_version)::bigint) || convert_to(new.event_version, 'UTF8')
        || int8send(octet_length(payload)::bigint) || convert_to(payload, 'UTF8')
        || int8send(octet_length(metadata)::bigint) || convert_to(metadata, 'UTF8')), 'hex');
    return new;
end $$;
