-- Erasure (AccountErased): an erased user keeps their row, with no name; an erased
-- message keeps its place (id, seq, thread, counts) with no text.
alter table users add column erased_at text;
alter table messages add column erased bigint not null default 0;
