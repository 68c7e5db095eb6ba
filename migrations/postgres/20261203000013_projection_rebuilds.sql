-- Rebuilds in progress, for status reports and metrics: one row per projector being
-- rebuilt beside its live tables (projections/src/rebuild.rs). The rebuild's own
-- resumable checkpoint lives with its shadow tables; this row only reports on it, and
-- goes away in the transaction that switches the rebuilt tables in.
create table projection_rebuilds (
    name       text   primary key,
    version    bigint not null,
    txid       bigint not null,
    position   bigint not null,
    applied    bigint not null,
    total      bigint not null,
    started_at text   not null,
    updated_at text   not null
);
