-- Attachments (projector `attachments`): every upload from its creation to its
-- removal. `status` is pending, completed, attached, rejected or removed; `changed_at`
-- is when it last changed, from which the sweeper measures abandonment, and
-- `message_deleted_at` is set when the message carrying it is deleted.
create table attachments (
    id                 text not null primary key,
    conversation_id    text not null,
    owner_id           text not null,
    filename           text not null,
    content_type       text not null,
    size               bigint not null,
    object_key         text not null,
    thumbnail_key      text,
    width              bigint,
    height             bigint,
    duration_ms        bigint,
    sha256             text,
    status             text not null,
    message_id         text,
    message_deleted_at text,
    created_at         text not null,
    expires_at         text not null,
    changed_at         text not null
);
create index attachments_by_owner on attachments (owner_id, status);
create index attachments_by_message on attachments (message_id);
create index attachments_by_status on attachments (status, changed_at);
