-- Data keys for crypto-shredding (parley-store's `keys` module). Not part of the event
-- log and not hash-chained: deleting a row erases what its key sealed. `wrapped` is the
-- key encrypted by the master key (base64), which is never stored here. Owner keys
-- (`u:…`) have no conversation or day; content keys (`c:conversation:author:day`) have
-- both, so erasure deletes by owner and retention by conversation and day.
create table data_keys (
    key_id          text not null primary key,
    owner_id        text not null,
    conversation_id text,
    day             text,
    wrapped         text not null,
    created_at      text not null
);
create index data_keys_owner on data_keys (owner_id);
create index data_keys_conversation_day on data_keys (conversation_id, day);
