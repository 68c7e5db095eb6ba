-- SQLite computes stream hashes in Rust at append (store/src/sqlite.rs); this number
-- matches PostgreSQL's trigger change so both backends share one migration history.
select 1;
