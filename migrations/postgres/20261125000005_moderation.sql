-- Moderation: mutes on the member list (projector `conversations`) and the moderation
-- log (projector `moderation`). `muted_until` is null for an indefinite mute.
alter table members add column muted bigint not null default 0;
alter table members add column muted_until text;

create table moderation_log (
    id              text not null primary key,
    conversation_id text not null,
    action          text not null,
    actor_id        text not null,
    target_id       text,
    message_id      text,
    reason          text,
    expires_at      text,
    occurred_at     text not null
);
create index moderation_log_by_conversation on moderation_log (conversation_id, occurred_at, id);
