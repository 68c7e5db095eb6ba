-- A projector that keeps failing on one event is marked here (by the node running it)
-- until it gets past it: `/readyz` and `parley projections status` show it, and
-- mutations stop waiting for it.
create table projection_failures (
    name      text   not null primary key,
    txid      bigint not null,
    position  bigint not null,
    error     text   not null,
    failed_at text   not null
);
