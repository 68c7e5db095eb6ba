-- Posts by `clientMessageId`: the conversation rules look a retry up here instead of
-- keeping a week of ids in the aggregate (and in every snapshot of it). Only posts that
-- carry an id are in the index.
create index events_client_message_ids
    on events (aggregate_type, aggregate_id, (payload->'MessagePosted'->>'client_message_id'))
    where event_type = 'MessagePosted'
      and payload->'MessagePosted'->>'client_message_id' is not null;
