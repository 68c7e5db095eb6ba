-- Removed uploads whose objects are still to be deleted from the blob store. The
-- sweeper notes an abandoned upload here before it records the removal and drops the
-- row once the objects are gone, so bytes nothing refers to are found again whatever
-- stopped it in between (a failed deletion, or the process itself). Not part of the
-- event log: operational state, like `data_keys`.
create table blob_purges (
    upload_id text not null primary key,
    noted_at  text not null
);
