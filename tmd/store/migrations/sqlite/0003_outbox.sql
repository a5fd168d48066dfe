-- The durable outbox: requests the replay queue is to deliver (webhook events, requests the
-- reflektor accepted), one row per destination, written in the transaction of the change that
-- caused them and deleted once delivered.
CREATE TABLE outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order: rows are replayed in it
    id TEXT NOT NULL,                       -- the event's id, the same for every destination
    destination TEXT NOT NULL,              -- which queue: 'webhook <url>' or 'replay <base url>'
    created_at INTEGER NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,                     -- appended to the destination's URL
    content_type TEXT,
    event TEXT,                             -- the webhook event; NULL for a replayed request
    body BLOB NOT NULL,
    dead INTEGER NOT NULL DEFAULT 0,        -- dead-lettered: kept for the operator, never retried
    UNIQUE (id, destination)
);
-- The replay queue reads what is pending in order; dead letters stay out of its way.
CREATE INDEX outbox_pending ON outbox (position) WHERE NOT dead;
