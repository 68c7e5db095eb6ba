-- The few event types read on their own (at every start, and by audit replay): found
-- through this small index instead of a scan of the whole log. Posts and other common
-- events are not in it, so appending them costs nothing more.
create index events_rare_types on events (event_type, aggregate_type)
    where event_type in ('AccountErased', 'MessagesExpired', 'MessageDeleted');
