-- Retention (RetentionSet): days a conversation keeps messages; null for the server's
-- default (PARLEY_RETENTION_DAYS).
alter table conversations add column retention_days bigint;
