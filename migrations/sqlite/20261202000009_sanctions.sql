-- Bans and mutes as the `conversations` projector keeps them: apart from `members`, so
-- that they outlive leaving and rejoining, and so that a ban (which need not follow a
-- membership) hides a public channel from the banned user. `until_ms` is Unix
-- milliseconds, null for an indefinite sanction.
create table sanctions (
    conversation_id text   not null,
    user_id         text   not null,
    kind            text   not null,
    until_ms        bigint,
    primary key (conversation_id, user_id, kind)
);
create index sanctions_by_user on sanctions (user_id, conversation_id);
create index invitations_pending on invitations (invitee_id, conversation_id, status);

alter table members drop column muted;
alter table members drop column muted_until;
