-- Appends no longer NOTIFY inside their transaction: PostgreSQL holds its database-wide
-- notification lock through the commit of any transaction that notified, WAL flush
-- included, so appends could not share an fsync. Each node now announces its commits
-- itself, after they commit and coalesced (parley-store's `announce` module).
drop trigger if exists events_notify on events;
drop function if exists events_notify();
