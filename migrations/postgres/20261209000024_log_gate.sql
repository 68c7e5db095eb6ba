-- The log's read gate, as one function: readers return only rows whose writer's
-- transaction id is below it, so no row can later commit before what they read.
--
-- The gate was the oldest transaction running anywhere in the cluster
-- (`pg_snapshot_xmin`). That waited for every transaction with an id: one in another
-- database of the same cluster, an analyst's session left open in this one, or a
-- rebuild's index build held every projector, and so every client's read-your-writes
-- wait, back for as long as it ran. Only transactions that append can put rows below
-- the gate, so only they hold it now.
--
-- An appending transaction starts with its `INSERT INTO events`, which takes its
-- `RowExclusiveLock` on `events` before the transaction has an id (ids are assigned when
-- the first row is written), and no transaction appends after writing anything else
-- (Parley never does, store/src/postgres.rs, and the trigger below refuses it). So a
-- running transaction whose backend is seen holding its id's lock but not that lock on
-- `events` will never append, and can be passed. Every other running one holds the gate
-- back: those appending, and those whose backend cannot be told (one between taking its
-- id and its id's lock, a prepared transaction, one that ended before the look at
-- `pg_locks`), so a race only ever makes the gate lower. Transactions that take an id
-- after this statement's snapshot get one at or above its `xmax`, the gate's ceiling.
--
-- The caller must read the log in a later statement than the one that computed the
-- gate: a writer that committed between this statement's snapshot and its look at the
-- lock table is below the gate but visible only to snapshots taken after.
--
-- `pg_locks` names transactions by 32-bit id and the log by 64-bit: the snapshot's list
-- of running transactions (all within 2^31 of each other) tells which 64-bit id each is.
--
-- PL/pgSQL rather than SQL so a session plans the query once, not at every call.
create or replace function parley_log_gate() returns bigint
language plpgsql volatile as $$
begin
    if pg_is_in_recovery() then
        -- A standby (an analyst's export from a replica) sees the primary's running
        -- transactions in its snapshots but not their locks: wait for all of them.
        return pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
    end if;
    return (
    with snapshot as (select pg_current_snapshot() as s),
    locks as materialized (
        select pid, locktype, mode, granted, transactionid, relation, database from pg_locks
    ),
    never_appending as (
        select own.transactionid::text::bigint as xid
          from locks own
         where own.locktype = 'transactionid' and own.mode = 'ExclusiveLock' and own.granted
           and own.pid is not null
           and not exists (
               select from locks log
                where log.pid = own.pid and log.locktype = 'relation'
                  and log.mode = 'RowExclusiveLock' and log.relation = 'events'::regclass
                  and log.database = (select oid from pg_database
                                       where datname = current_database()))
    )
    select least(
        pg_snapshot_xmax(s)::text::bigint,
        (select min(running::text::bigint)
           from pg_snapshot_xip(s) as running
          where running::text::bigint % 4294967296 not in (select xid from never_appending)))
      from snapshot
    );
end
$$;

-- What the gate relies on, enforced: a transaction's first `INSERT INTO events` comes
-- before any other write (it has no transaction id yet); later ones in the same
-- transaction are fine, since it has held the lock since the first.
create or replace function events_append_first() returns trigger
language plpgsql as $$
begin
    if pg_current_xact_id_if_assigned() is not null
       and current_setting('parley.appending', true) is distinct from 'on' then
        raise exception 'an append must be the first write of its transaction'
            using hint = 'the log''s readers rely on it: see parley_log_gate()';
    end if;
    perform set_config('parley.appending', 'on', true);
    return null;
end $$;

create trigger events_append_first
    before insert on events
    for each statement execute function events_append_first();
