-- The durable outbox: requests the replay queue is to deliver (webhook events, requests the
-- reflektor accepted), one row per destination, written in the transaction of the change that
-- caused them and deleted once delivered.
-- Kept in step with sqlite/0003: the same table, columns and constraints.
CREATE TABLE outbox (
    position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- insertion order: replayed in it
    id TEXT NOT NULL,                        -- the event's id, the same for every destination
    destination TEXT NOT NULL,               -- which queue: 'webhook <url>' or 'replay <base url>'
    created_at BIGINT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,                      -- appended to the destination's URL
    content_type TEXT,
    event TEXT,                              -- the webhook event; NULL for a replayed request
    body BYTEA NOT NULL,
    dead BOOLEAN NOT NULL DEFAULT false,     -- dead-lettered: kept for the operator, never retried
    UNIQUE (id, destination)
);
-- The replay queue reads what is pending in order; dead letters stay out of its way.
CREATE INDEX outbox_pending ON outbox (position) WHERE NOT dead;
