-- Full-text search indexes an expression over `body` instead of a stored generated
-- column. The column computed and stored a `tsvector` for every message written, which
-- was nearly half the cost of inserting one during a rebuild; the index alone is built
-- in one pass after a rebuild's replay, and live writes no longer store a copy of it.
-- Queries match `to_tsvector('simple', coalesce(body, ''))`, the indexed expression.
drop index if exists messages_search;
alter table messages drop column if exists search;
create index messages_search on messages using gin (to_tsvector('simple', coalesce(body, '')));
