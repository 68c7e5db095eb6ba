-- The audit chain is only ever read in log order (its primary key): verification scans
-- it and compares an anchor as it goes. An index on `chain_hash`, a random key, cost
-- every event a write to a page of its own (on SQLite one 4 KiB page in seven that an
-- append's transaction wrote) and answered no query.
drop index if exists audit_chain_by_hash;
