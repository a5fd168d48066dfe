-- Teacher and speaker tools (docs/room-tools.md): questions and votes, the approval queue,
-- restricted words, host posts and the lock, participation statistics.
-- Kept in step with sqlite/0004: the same tables, columns and constraints.
ALTER TABLE rooms ADD COLUMN qa BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE rooms ADD COLUMN moderation TEXT NOT NULL DEFAULT 'none'
    CHECK (moderation IN ('none', 'pre'));
ALTER TABLE rooms ADD COLUMN locked BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE rooms ADD COLUMN host_name TEXT NOT NULL DEFAULT 'Host';
ALTER TABLE rooms ADD COLUMN pinned_seq BIGINT;            -- the "now discussing" message
ALTER TABLE rooms ADD COLUMN restricted JSONB NOT NULL DEFAULT '{}';  -- words, action, lists
ALTER TABLE rooms ADD COLUMN peak_online INTEGER NOT NULL DEFAULT 0;

ALTER TABLE messages ADD COLUMN question BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE messages ADD COLUMN votes INTEGER NOT NULL DEFAULT 0;  -- kept with the votes rows
ALTER TABLE messages ADD COLUMN answered BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE messages ADD COLUMN host BOOLEAN NOT NULL DEFAULT false;   -- posted by the owner
ALTER TABLE messages ADD COLUMN edited BOOLEAN NOT NULL DEFAULT false; -- edited before approval

-- One row per participant and question voted for: a second vote finds the row there.
CREATE TABLE votes (
    room_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    participant_id TEXT NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq, participant_id),
    FOREIGN KEY (room_id, seq) REFERENCES messages (room_id, seq) ON DELETE CASCADE
);
CREATE INDEX votes_participant ON votes (room_id, participant_id);

-- Posts waiting for the owner's approval; they get a seq only when approved.
CREATE TABLE held (
    id TEXT PRIMARY KEY,
    room_id BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    participant_id TEXT NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    question BOOLEAN NOT NULL DEFAULT false,
    created_at BIGINT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('moderation', 'restricted')),
    matched JSONB NOT NULL DEFAULT '[]'      -- the restricted words it matched
);
CREATE INDEX held_room ON held (room_id, created_at);

-- "Top" questions: most votes first.
CREATE INDEX messages_questions ON messages (room_id, votes DESC, seq) WHERE question AND NOT deleted;
