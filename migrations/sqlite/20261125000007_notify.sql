-- PostgreSQL wakes other nodes' log tails with NOTIFY; embedded SQLite is single-node,
-- and its tails are woken in process. Kept so both backends share migration versions.
select 1;
