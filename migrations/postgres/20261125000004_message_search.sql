-- Full-text search over message bodies (projector `messages`). The `simple`
-- configuration: no language-specific stemming, so every language matches alike.
alter table messages
    add column search tsvector generated always as (to_tsvector('simple', coalesce(body, ''))) stored;
create index messages_search on messages using gin (search);
