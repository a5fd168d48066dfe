"""The statistics queries, the same on both engines but for how they name a parameter."""

from __future__ import annotations


def participant_stats(room: str) -> str:
    """Per participant of the room C{room} names: id, nickname, messages, questions, votes cast."""
    return f"""
SELECT p.id, p.nickname, coalesce(m.messages, 0), coalesce(m.questions, 0), coalesce(v.votes, 0)
FROM participants p
LEFT JOIN (
    SELECT participant_id, count(*) AS messages,
           sum(CASE WHEN question THEN 1 ELSE 0 END) AS questions
    FROM messages WHERE room_id = {room} AND NOT deleted AND participant_id IS NOT NULL
    GROUP BY participant_id
) m ON m.participant_id = p.id
LEFT JOIN (
    SELECT participant_id, count(*) AS votes FROM votes WHERE room_id = {room}
    GROUP BY participant_id
) v ON v.participant_id = p.id
WHERE p.room_id = {room} ORDER BY p.created_at, p.id
"""


def room_stats(room: str) -> str:
    """The room's totals: messages, questions, host messages, votes, held posts, peak online."""
    return f"""
SELECT (SELECT count(*) FROM messages WHERE room_id = r.id AND NOT deleted AND kind <> 'system'),
       (SELECT count(*) FROM messages WHERE room_id = r.id AND NOT deleted AND question),
       (SELECT count(*) FROM messages WHERE room_id = r.id AND NOT deleted AND host),
       (SELECT count(*) FROM votes WHERE room_id = r.id),
       (SELECT count(*) FROM held WHERE room_id = r.id),
       r.peak_online
FROM rooms r WHERE r.id = {room}
"""
