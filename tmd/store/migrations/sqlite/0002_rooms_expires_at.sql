-- The reaper looks rooms up by expiry: those to close, then those to delete.
CREATE INDEX rooms_expires_at ON rooms (expires_at);
