-- The append-only event store. One writer, so the rowid (`position`) is commit order;
-- AUTOINCREMENT keeps positions from ever being reused.

create table events (
    position       integer primary key autoincrement,
    txid           integer not null default 0,
    event_id       text    not null unique,
    aggregate_type text    not null,
    aggregate_id   text    not null,
    sequence       integer not null check (sequence >= 1),
    event_type     text    not null,
    event_version  text    not null,
    payload        text    not null,
    metadata       text    not null,
    recorded_at    text    not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    unique (aggregate_type, aggregate_id, sequence)
);

create trigger events_no_update before update on events
begin
    select raise(abort, 'the event log is append-only (UPDATE refused)');
end;

create trigger events_no_delete before delete on events
begin
    select raise(abort, 'the event log is append-only (DELETE refused)');
end;

create table snapshots (
    aggregate_type   text    not null,
    aggregate_id     text    not null,
    last_sequence    integer not null check (last_sequence >= 0),
    current_snapshot integer not null check (current_snapshot >= 0),
    payload          text    not null,
    primary key (aggregate_type, aggregate_id)
);

create table projection_checkpoints (
    name     text    primary key,
    version  bigint  not null,
    txid     bigint  not null,
    position bigint  not null
);
