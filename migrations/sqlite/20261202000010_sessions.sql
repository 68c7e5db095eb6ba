-- Sign-in sessions (projector `sessions`): when each began and, once over, when it
-- ended. Every node keeps the recently ended ones in memory, so an access token of an
-- ended session stops working at once without a database read per request.
create table sessions (
    family_id     text   not null primary key,
    user_id       text   not null,
    started_at_ms bigint not null,
    ended_at_ms   bigint
);
create index sessions_by_user on sessions (user_id, ended_at_ms);
create index sessions_ended on sessions (ended_at_ms);
