-- Wakes log tails on every node when events commit (NOTIFY is delivered at commit, and
-- once per statement keeps a burst of events to one wake-up each).
create or replace function events_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('parley_events', '');
    return null;
end $$;

create trigger events_notify
    after insert on events
    for each statement execute function events_notify();
