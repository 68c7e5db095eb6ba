-- Read models for conversations and messaging. Text ids and RFC 3339 text times, so the
-- same SQL serves both backends.

-- projector `conversations`
create table conversations (
    id          text   not null primary key,
    kind        text   not null,
    title       text,
    slug        text   unique,
    description text,
    visibility  text   not null,
    creator_id  text   not null,
    created_at  text   not null
);
create index conversations_public on conversations (visibility, kind, created_at);

create table members (
    conversation_id    text not null,
    user_id            text not null,
    role               text not null,
    joined_at          text not null,
    notification_level text not null default 'ALL',
    primary key (conversation_id, user_id)
);
create index members_by_user on members (user_id, conversation_id);

create table invitations (
    id              text not null primary key,
    conversation_id text not null,
    inviter_id      text not null,
    invitee_id      text not null,
    status          text not null,
    created_at      text not null,
    answered_at     text
);
create index invitations_by_invitee on invitations (invitee_id, created_at, id);

-- projector `messages`
create table messages (
    id                text   not null primary key,
    conversation_id   text   not null,
    seq               bigint not null,
    author_id         text   not null,
    body              text,
    format            text   not null,
    created_at        text   not null,
    edited_at         text,
    deleted           bigint not null default 0,
    reply_to_id       text,
    reply_count       bigint not null default 0,
    mentions          text   not null default '[]',
    attachment_ids    text   not null default '[]',
    unique (conversation_id, seq)
);
create index messages_by_author on messages (conversation_id, author_id, seq);
create index messages_deleted on messages (conversation_id, seq) where deleted = 1;
create index messages_replies on messages (reply_to_id, seq);

-- Earlier bodies of edited messages; `version` is the edit's sequence in the message stream.
create table message_edits (
    message_id text   not null,
    version    bigint not null,
    body       text   not null,
    edited_at  text   not null,
    primary key (message_id, version)
);

create table reactions (
    message_id text not null,
    emoji      text not null,
    user_id    text not null,
    created_at text not null,
    primary key (message_id, emoji, user_id)
);

create table conversation_activity (
    conversation_id  text   not null primary key,
    last_seq         bigint not null,
    last_message_id  text,
    last_activity_at text   not null
);
create index conversation_activity_recent on conversation_activity (last_activity_at, conversation_id);

-- projector `unread`: one marker per member, moved only by that member's own actions,
-- and attention rows only for the users a message mentions or replies to.
create table read_markers (
    conversation_id text   not null,
    user_id         text   not null,
    read_seq        bigint not null,
    message_id      text,
    primary key (conversation_id, user_id)
);

create table attention (
    user_id         text   not null,
    conversation_id text   not null,
    seq             bigint not null,
    message_id      text   not null,
    primary key (user_id, message_id)
);
create index attention_by_conversation on attention (user_id, conversation_id, seq);

-- projector `notifications`
create table notifications (
    id              text   not null primary key,
    user_id         text   not null,
    kind            text   not null,
    conversation_id text   not null,
    message_id      text,
    invitation_id   text,
    actor_id        text   not null,
    created_at      text   not null,
    read            bigint not null default 0
);
create index notifications_by_user on notifications (user_id, created_at, id);

create table notification_levels (
    conversation_id text not null,
    user_id         text not null,
    level           text not null,
    primary key (conversation_id, user_id)
);
