-- Full-text search over message bodies (projector `messages`), kept in step with
-- `messages` by the projector: a row per live message, removed when it is deleted.
create virtual table messages_fts using fts5(
    message_id unindexed,
    body,
    tokenize = 'unicode61 remove_diacritics 2'
);
