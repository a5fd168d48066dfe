-- Rooms, their participants and their messages. Times are milliseconds since the epoch.
-- Kept in step with sqlite/0001: the same tables, columns and constraints.
CREATE TABLE rooms (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- a deleted room's id is never reused
    name TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'paused', 'closed')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    max_length INTEGER NOT NULL,
    password_hash TEXT,
    hashtags JSONB NOT NULL DEFAULT '[]',
    owner_token_hash BYTEA NOT NULL,
    last_seq BIGINT NOT NULL DEFAULT 0       -- the seq of the room's newest message
);

CREATE TABLE participants (
    id TEXT PRIMARY KEY,
    room_id BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    nickname TEXT NOT NULL,
    nickname_key TEXT NOT NULL,              -- case-folded, for uniqueness per room
    token_hash BYTEA NOT NULL UNIQUE,
    muted BOOLEAN NOT NULL DEFAULT false,
    created_at BIGINT NOT NULL,
    CONSTRAINT participants_nickname_key UNIQUE (room_id, nickname_key)
);

CREATE TABLE messages (
    room_id BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('chat', 'social', 'system')),
    author TEXT,
    participant_id TEXT,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    source JSONB,                            -- for social messages
    deleted BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (room_id, seq)
);
