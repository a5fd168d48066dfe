"""
JSON in and out, in one place: the API's objects, frames and error bodies.

Encoding happens here once per event; decoding checks types so that the core
only ever sees well-formed values.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeVar

from tmd.errors import ApiError, BadRequest
from tmd.model import Message, Participant, Room

T = TypeVar("T")


def timestamp(ms: int) -> str:
    """RFC 3339 UTC with milliseconds: C{2026-11-24T17:00:00.123Z}."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


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
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"'{key}' must be {_TYPE_NAMES.get(kind, kind.__name__)}.")
    return value


def required(obj: dict[str, Any], key: str, kind: type[T]) -> T:
    value = field_of(obj, key, kind)
    if value is None:
        raise BadRequest(f"'{key}' is required.")
    return value
