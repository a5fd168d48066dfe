-- Rooms, their participants and their messages. Times are milliseconds since the epoch.
CREATE TABLE rooms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- AUTOINCREMENT: a deleted room's id is never reused
    name TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'paused', 'closed')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    max_length INTEGER NOT NULL,
    password_hash TEXT,
    hashtags TEXT NOT NULL DEFAULT '[]',    -- a JSON list
    owner_token_hash BLOB NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0     -- the seq of the room's newest message
);

CREATE TABLE participants (
    id TEXT PRIMARY KEY,
    room_id INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    nickname TEXT NOT NULL,
    nickname_key TEXT NOT NULL,             -- case-folded, for uniqueness per room
    token_hash BLOB NOT NULL UNIQUE,
    muted INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    UNIQUE (room_id, nickname_key)
);

CREATE TABLE messages (
    room_id INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('chat', 'social', 'system')),
    author TEXT,
    participant_id TEXT,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    source TEXT,                            -- JSON, for social messages
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;
