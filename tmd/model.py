"""
The domain objects: rooms, participants, messages and the events the Hub carries.

They are frozen so that one object can be handed to every subscriber safely.
Times are integer milliseconds since the epoch (UTC); L{tmd.wire} renders them.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from attrs import evolve, field, frozen


@frozen
class Restricted:
    """A room's restricted words: C{action} is C{hold} or C{refuse}; C{lists} are built-in lists."""

    words: tuple[str, ...] = ()
    action: str = "hold"
    lists: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"words": list(self.words), "action": self.action, "lists": list(self.lists)}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Restricted:
        return cls(words=tuple(value.get("words", ())), action=value.get("action", "hold"),
                   lists=tuple(value.get("lists", ())))


def nickname_key(nickname: str) -> str:
    """
    What makes two nicknames the same: compatibility forms and case folded, invisible
    formatting dropped, so that look-alikes such as "Ada" and its full-width twin cannot both join.
    """
    folded = unicodedata.normalize("NFKC", nickname).casefold()
    return "".join(c for c in folded if unicodedata.category(c) != "Cf")


@frozen
class Room:
    """A room as stored: C{id} is never reused, so a re-created name is a new room."""

    id: int
    name: str
    title: str
    state: str
    created_at: int
    expires_at: int
    max_length: int
    password_hash: str | None = field(repr=False)
    owner_token_hash: bytes = field(repr=False)
    hashtags: tuple[str, ...]
    last_seq: int
    qa: bool = False
    """Questions and votes on."""
    moderation: str = "none"
    """C{none}, or C{pre}: participants' posts wait for the owner's approval."""
    locked: bool = False
    """Only the host posts."""
    host_name: str = "Host"
    pinned: int | None = None
    """The seq of the message pinned as "now discussing"."""
    restricted: Restricted = field(factory=Restricted, repr=False)
    peak_online: int = 0

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None

    def state_at(self, now_ms: int) -> str:
        """The state clients see: an expired room is closed whatever its row says."""
        return "closed" if now_ms >= self.expires_at else self.state


@frozen
class NewRoom:
    """What a client asked for when creating a room, already validated."""

    name: str
    title: str
    created_at: int
    expires_at: int
    max_length: int
    hashtags: tuple[str, ...]
    password_hash: str | None
    owner_token_hash: bytes
    qa: bool = False
    moderation: str = "none"
    host_name: str = "Host"


@frozen
class RoomChanges:
    """The settings an owner can change, all of them, as they are to be stored."""

    state: str
    title: str
    hashtags: tuple[str, ...]
    expires_at: int
    qa: bool = False
    moderation: str = "none"
    locked: bool = False
    host_name: str = "Host"


@frozen
class Participant:
    id: str
    room_id: int
    nickname: str
    muted: bool


@frozen
class Message:
    seq: int
    room: str
    kind: str
    author: str | None
    body: str
    created_at: int
    source: dict[str, Any] | None = None
    participant_id: str | None = None
    """Who posted a chat message: the owner mutes a participant by it."""
    question: bool = False
    votes: int = 0
    answered: bool = False
    pinned: bool = False
    host: bool = False
    """Posted by the owner, as the host."""
    edited: bool = False
    """The owner edited it before approving it."""


@frozen
class NewMessage:
    """A message before the store gives it its C{seq}."""

    kind: str
    author: str | None
    participant_id: str | None
    body: str
    created_at: int
    source: dict[str, Any] | None = None
    question: bool = False
    host: bool = False
    edited: bool = False


@frozen
class Held:
    """A post waiting for the owner's approval: it has no seq until approved."""

    id: str
    room_id: int
    room: str
    participant_id: str
    author: str
    body: str
    question: bool
    created_at: int
    reason: str
    """C{moderation} (the room is C{pre}) or C{restricted} (it matched restricted words)."""
    matched: tuple[str, ...] = ()
    """The restricted words or phrases it matched (a few at most)."""


@frozen
class ParticipantStats:
    id: str
    nickname: str
    messages: int
    questions: int
    votes: int


@frozen
class RoomStats:
    """How a room took part: per participant, in total, and the most online at once."""

    participants: tuple[ParticipantStats, ...]
    messages: int
    questions: int
    votes: int
    host_messages: int
    held: int
    peak_online: int


@frozen
class Viewer:
    """Who a live subscriber is, for the frames meant for some only."""

    participant_id: str | None = None
    owner: bool = False


ANYONE = Viewer()


@frozen
class Audience:
    """Whom an event is for, when not for everyone: some participants, the owner's sockets."""

    participants: frozenset[str] = frozenset()
    owner: bool = False

    def includes(self, viewer: Viewer) -> bool:
        return (self.owner and viewer.owner) or (
            viewer.participant_id is not None and viewer.participant_id in self.participants)


SEQ_PLACEHOLDER = b'"seq":null'
"""
In the body of a delivery written with a post, this first occurrence stands for the
message's seq, which the store fills in once it has allocated it.
"""


@frozen
class Delivery:
    """
    One HTTP request to replay to one destination: a webhook's event, or a request
    the reflektor accepted. C{id} is the same for every destination of one event,
    and on every retry: receivers drop duplicates by it.
    """

    id: str
    destination: str
    """Which queue: C{webhook <url>} or C{replay <base url>}."""
    created_at: int
    method: str
    path: str
    """Appended to the destination's URL, with any query string."""
    content_type: str | None
    event: str | None
    """The webhook event (C{message.created}, ...); None for a replayed request."""
    body: bytes = field(repr=False)

    def with_seq(self, seq: int) -> Delivery:
        """This delivery with the message's seq in place of L{SEQ_PLACEHOLDER}."""
        return evolve(self, body=self.body.replace(SEQ_PLACEHOLDER, b'"seq":%d' % seq, 1))


@frozen
class Event:
    """
    Something that happened in a room, as the Hub fans it out.

    C{frame} is the server frame, JSON-encoded once for every subscriber; C{message}
    is set for message events, so subscribers can order and de-duplicate by seq.
    An event with C{last_seq} and no frame tells subscribers the room's last seq
    (after the Bus lost touch for a while): those behind catch up from the store.
    """

    room_id: int
    frame: bytes
    message: Message | None = field(default=None)
    last_seq: int | None = field(default=None)
    gone: bool = field(default=False)
    """The room was deleted: after this frame, subscribers are closed."""
    audience: Audience | None = field(default=None)
    """Whom the frame is for; None: every subscriber of the room."""

    @property
    def seq(self) -> int | None:
        return self.message.seq if self.message is not None else None
