-- The search index is keyed by an integer of its own per message: FTS5 finds a row
-- quickly only by rowid, and looking a message up by an unindexed `message_id` column
-- scanned the whole index on every post, edit and delete.
create table message_search_keys (
    docid integer primary key,
    message_id text not null unique
);
insert into message_search_keys (message_id) select message_id from messages_fts;

create virtual table messages_fts_keyed using fts5(
    body,
    tokenize = 'unicode61 remove_diacritics 2'
);
insert into messages_fts_keyed (rowid, body)
    select k.docid, f.body
    from messages_fts f join message_search_keys k on k.message_id = f.message_id;
drop table messages_fts;
alter table messages_fts_keyed rename to messages_fts;
