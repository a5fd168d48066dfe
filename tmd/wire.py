"""
JSON in and out, in one place: the API's objects, frames and error bodies.

Encoding happens here once per event; decoding checks types so that the core
only ever sees well-formed values.
"""

from __future__ import annotations

import json
import time
from typing import Any, TypeVar

from tmd.errors import ApiError, BadRequest
from tmd.model import Audience, Event, Held, Message, Participant, Room, RoomStats

T = TypeVar("T")


def timestamp(ms: int) -> str:
    """RFC 3339 UTC with milliseconds: C{2026-11-24T17:00:00.123Z}."""
    seconds, millis = divmod(ms, 1000)  # time.gmtime: half the cost of a datetime
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def room_json(room: Room, online: int, now_ms: int) -> dict[str, Any]:
    return {
        "name": room.name,
        "title": room.title,
        "state": room.state_at(now_ms),
        "created_at": timestamp(room.created_at),
        "expires_at": timestamp(room.expires_at),
        "max_length": room.max_length,
        "has_password": room.has_password,
        "hashtags": list(room.hashtags),
        "online": online,
        "last_seq": room.last_seq,
        "id": str(room.id),
        "qa": room.qa,
        "moderation": room.moderation,
        "locked": room.locked,
        "host_name": room.host_name,
        "pinned": room.pinned,
    }


def message_json(message: Message) -> dict[str, Any]:
    return {
        "seq": message.seq,
        "room": message.room,
        "kind": message.kind,
        "author": message.author,
        "body": message.body,
        "created_at": timestamp(message.created_at),
        "source": message.source,
        "participant_id": message.participant_id,
        "question": message.question,
        "votes": message.votes,
        "answered": message.answered,
        "pinned": message.pinned,
        "host": message.host,
        "edited": message.edited,
    }


def held_json(held: Held, owner: bool) -> dict[str, Any]:
    """A held post; the words it matched only for the owner."""
    return {
        "id": held.id,
        "room": held.room,
        "author": held.author,
        "participant_id": held.participant_id,
        "body": held.body,
        "question": held.question,
        "created_at": timestamp(held.created_at),
        "reason": held.reason,
        "matched": list(held.matched) if owner else [],
    }


def stats_json(stats: RoomStats, online: int) -> dict[str, Any]:
    return {
        "participants": [
            {"id": p.id, "nickname": p.nickname, "messages": p.messages,
             "questions": p.questions, "votes": p.votes} for p in stats.participants],
        "messages": stats.messages,
        "questions": stats.questions,
        "votes": stats.votes,
        "host_messages": stats.host_messages,
        "held": stats.held,
        "peak_online": max(stats.peak_online, online),
        "online": online,
    }


def participant_json(participant: Participant) -> dict[str, Any]:
    return {"id": participant.id, "nickname": participant.nickname}


def moderated_participant_json(participant: Participant) -> dict[str, Any]:
    """A participant as the room's owner sees it."""
    return {**participant_json(participant), "muted": participant.muted}


def error_json(error: ApiError) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message}}


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def message_frame(message: Message) -> bytes:
    return encode({"type": "message", "message": message_json(message)})


def room_frame(room: Room, online: int, now_ms: int) -> bytes:
    return encode({"type": "room", "room": room_json(room, online, now_ms)})


def deleted_frame(seq: int) -> bytes:
    return encode({"type": "deleted", "seq": seq})


def ack_json(ref: str | None, posted: Message | Held) -> dict[str, Any]:
    """The reply to a post over a live connection: its seq, or the id it is held under."""
    if isinstance(posted, Held):
        return {"type": "ack", "ref": ref, "seq": None, "held": posted.id}
    return {"type": "ack", "ref": ref, "seq": posted.seq}


def updated_event(room_id: int, message: Message) -> Event:
    """A message's votes, answered or pinned changed: everyone gets it whole."""
    return Event(room_id=room_id,
                 frame=encode({"type": "updated", "message": message_json(message)}))


def held_events(held: Held) -> list[Event]:
    """A post was held: its author's sockets hear it is pending, the owner's that it is queued."""
    return [
        Event(room_id=held.room_id, audience=Audience(owner=True),
              frame=encode({"type": "held", "held": held_json(held, owner=True)})),
        Event(room_id=held.room_id,
              audience=Audience(participants=frozenset({held.participant_id})),
              frame=encode({"type": "pending", "held": held_json(held, owner=False)})),
    ]


def released_event(room_id: int, held_id: str, participant_id: str, seq: int | None) -> Event:
    """A held post was approved (with its seq) or rejected: for the owner and its author."""
    return Event(
        room_id=room_id, audience=Audience(participants=frozenset({participant_id}), owner=True),
        frame=encode({"type": "released", "id": held_id,
                      "outcome": "approved" if seq is not None else "rejected", "seq": seq}))


def presence_frame(online: int) -> bytes:
    return encode({"type": "presence", "online": online})


def error_frame(error: ApiError, ref: str | None) -> bytes:
    frame: dict[str, Any] = {
        "type": "error", "ref": ref, "code": error.code, "message": error.message}
    if error.retry_after is not None:
        frame["retry_after"] = error.retry_after
    return encode(frame)


def decode_object(data: bytes) -> dict[str, Any]:
    """Parse a JSON object, or raise L{BadRequest} saying what is wrong."""
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("The body is not valid UTF-8.") from None
    except ValueError as e:
        raise BadRequest(f"The body is not valid JSON: {e}.") from None
    except RecursionError:  # json recurses per level: thousands of [[[[ exhaust the stack
        raise BadRequest("The body is not valid JSON: it is nested too deeply.") from None
    if not isinstance(value, dict):
        raise BadRequest("The body must be a JSON object.")
    return value


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "a list"}


def field_of(obj: dict[str, Any], key: str, kind: type[T], default: T | None = None) -> T | None:
    """
    C{obj[key]} if it is of C{kind}, C{default} if absent or null; anything else
    is a L{BadRequest} naming the field. (C{True} is no integer here.)
    """
    value = obj.get(key)
    if value is None:
        return default
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 538.0 is the integer 538
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"'{key}' must be {_TYPE_NAMES.get(kind, kind.__name__)}.")
    return value


def required(obj: dict[str, Any], key: str, kind: type[T]) -> T:
    value = field_of(obj, key, kind)
    if value is None:
        raise BadRequest(f"'{key}' is required.")
    return value
