-- Presence: ephemeral state written by the live layer, not by projectors. Only what
-- matters later (the status last announced and when a user was last seen) is kept,
-- plus one lease per node and user with open connections, so a node that dies stops
-- keeping its users online once its leases lapse. Times are Unix milliseconds.
create table presence (
    user_id      text   not null primary key,
    status       text   not null default 'OFFLINE',
    away         bigint not null default 0,
    heartbeat_at bigint,
    last_seen_at bigint
);

create table presence_sessions (
    node_id     text   not null,
    user_id     text   not null,
    lease_until bigint not null,
    primary key (node_id, user_id)
);

create index presence_sessions_user on presence_sessions (user_id, lease_until);

-- The sweep for lapsed presence looks only at users not already offline.
create index presence_present on presence (user_id) where status <> 'OFFLINE';
