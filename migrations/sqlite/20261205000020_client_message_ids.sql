-- Posts by `clientMessageId`: the conversation rules look a retry up here instead of
-- keeping a week of ids in the aggregate (and in every snapshot of it). Only posts that
-- carry an id are in the index.
CREATE INDEX events_client_message_ids
    ON events (aggregate_type, aggregate_id, json_extract(payload, '$.MessagePosted.client_message_id'))
    WHERE event_type = 'MessagePosted'
      AND json_extract(payload, '$.MessagePosted.client_message_id') IS NOT NULL;
