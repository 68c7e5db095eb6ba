-- Tamper evidence (README, "Audit"). Each event row carries `hash`, computed at append by
-- Parley's SQLite repository with the layout documented in
-- migrations/postgres/20261125000006_hash_chain.sql. SQLite cannot compute SHA-256 in
-- SQL, so rows stored before this migration are hashed by `parley migrate` right after
-- it; the append-only rule allows exactly that one update, from no hash to a hash.
alter table events add column hash text;

drop trigger events_no_update;
create trigger events_no_update before update on events
when old.hash is not null
  or new.hash is null
  or new.position is not old.position
  or new.aggregate_type is not old.aggregate_type
  or new.aggregate_id is not old.aggregate_id
  or new.sequence is not old.sequence
  or new.event_type is not old.event_type
  or new.event_version is not old.event_version
  or new.payload is not old.payload
  or new.metadata is not old.metadata
  or new.event_id is not old.event_id
begin
    select raise(abort, 'the event log is append-only (UPDATE refused)');
end;

create table audit_chain (
    txid        bigint not null,
    position    bigint not null,
    event_id    text   not null,
    stream_hash text   not null,
    chain_hash  text   not null,
    primary key (txid, position)
);
create index audit_chain_by_hash on audit_chain (chain_hash);
