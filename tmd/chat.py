"""
The chat core: the rules of rooms, participants and posts, in plain Python.

Protocols (the JSON API, the websocket, later IRC) only translate to and from
these calls; every rule lives here once. Posting follows DESIGN.md's hot path:
validate, commit (the store allocates the seq), then publish through the Bus, so
no client ever sees a message the database does not hold.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from tmd import tokens, words
from tmd.bus import Bus, LocalBus, room_gone
from tmd.errors import (
    BadRequest,
    Empty,
    Forbidden,
    InvalidName,
    Muted,
    NotAQuestion,
    NotFound,
    QaOff,
    RestrictedWord,
    RoomClosed,
    RoomLocked,
    RoomPaused,
    TooLong,
    Unauthorized,
    Unavailable,
)
from tmd.hub import Hub
from tmd.limits import NO_LIMITS, RateLimiter
from tmd.metrics import Metrics
from tmd.model import (
    Event,
    Held,
    Message,
    NewMessage,
    NewRoom,
    Participant,
    Restricted,
    Room,
    RoomChanges,
    RoomStats,
)
from tmd.relay import Relay
from tmd.store import IStore
from tmd.wire import (
    deleted_frame,
    field_of,
    held_events,
    message_frame,
    message_json,
    released_event,
    required,
    room_frame,
    room_json,
    updated_event,
)

T = TypeVar("T")
InThread = Callable[..., Deferred[Any]]

ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
RESERVED_NAMES = frozenset({
    "api", "static", "ws", "metrics", "healthz", "replay", "favicon.ico", "robots.txt",
    "admin", "about", "help", "docs", "new", "rooms", "login", "logout", "settings", "www",
})
HASHTAG = re.compile(r"#?[A-Za-z0-9_]{1,100}")
LIFETIME = (3600, 31_536_000, 86_400)  # min, max, default (seconds)
MAX_LENGTH = (1, 1000, 280)
MAX_TITLE = 200
MAX_HASHTAGS = 10
MAX_NICKNAME = 32
MAX_PASSWORD = 200
MAX_ID = 64
MODERATION = ("none", "pre")
RESTRICTED_ACTIONS = ("hold", "refuse")
DEFAULT_HOST_NAME = "Host"


def room_name(name: str) -> str:
    """The stored form of a room name (lower-case), or L{InvalidName}."""
    slug = name.lower()
    if not ROOM_NAME.fullmatch(slug) or slug in RESERVED_NAMES:
        raise InvalidName(
            "Room names are 2 to 63 letters, digits and dashes, starting with a letter or digit,"
            " and not a reserved word.")
    return slug


# Invisible characters that only serve to deceive: zero-width spaces, BOM, bidi overrides.
_INVISIBLE = frozenset("\u200b\u2060\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_text(text: str) -> str:
    """NFC, trimmed, with line breaks as LF, no other control and no deceptive characters."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "".join(
        c for c in text
        if c in "\n\t" or (unicodedata.category(c) != "Cc" and c not in _INVISIBLE)
    ).strip()


def _bounded(request: dict[str, Any], key: str, bounds: tuple[int, int, int]) -> int:
    low, high, default = bounds
    value = field_of(request, key, int, default)
    assert value is not None
    if not low <= value <= high:
        raise BadRequest(f"'{key}' must be from {low} to {high}.")
    return value


def _host_name(request: dict[str, Any], default: str) -> str:
    name = clean_text(field_of(request, "host_name", str, default) or "")
    if not 1 <= len(name) <= MAX_NICKNAME or "\n" in name or "\t" in name:
        raise BadRequest(f"'host_name' is 1 to {MAX_NICKNAME} characters on one line.")
    return name


def _moderation(request: dict[str, Any], default: str) -> str:
    moderation = field_of(request, "moderation", str, default)
    if moderation not in MODERATION:
        raise BadRequest("'moderation' is none or pre.")
    return moderation


def start_point(room: Room, since: int | None, room_id: str | None,
                backlog: int) -> tuple[int, bool]:
    """
    The seq a live client starts after, and whether the room is new to it: a client
    resuming (C{since}) a room of another id, or past the room's last seq, follows a
    room deleted and created again, and starts over with the last C{backlog} messages.
    """
    fresh = max(0, room.last_seq - backlog)
    if since is None:
        return fresh, False
    if (room_id is not None and room_id != str(room.id)) or since > room.last_seq:
        return fresh, True
    return since, False


def _hashtags(request: dict[str, Any]) -> tuple[str, ...]:
    tags = field_of(request, "hashtags", list, [])
    assert tags is not None
    if len(tags) > MAX_HASHTAGS:
        raise BadRequest(f"A room has at most {MAX_HASHTAGS} hashtags.")
    found: dict[str, str] = {}  # hashtags match case-insensitively: keep the first spelling
    for tag in tags:
        if not isinstance(tag, str) or not HASHTAG.fullmatch(tag):
            raise BadRequest("A hashtag is letters, digits or underscores, with an optional '#'.")
        found.setdefault(tag.lstrip("#").lower(), "#" + tag.lstrip("#"))
    return tuple(found.values())


class Chat:
    """Rooms, participants and posts; every method validates its input first."""

    log = Logger()

    def __init__(self, store: IStore, hub: Hub, clock: IReactorTime, in_thread: InThread,
                 bus: Bus | None = None, limiter: RateLimiter | None = None,
                 relay: Relay | None = None, metrics: Metrics | None = None) -> None:
        self._store = store
        self._hub = hub
        self._clock = clock
        self._in_thread = in_thread
        self._bus = bus if bus is not None else LocalBus(hub)
        self._limiter = limiter if limiter is not None else RateLimiter(NO_LIMITS, clock)
        self._relay = relay if relay is not None else Relay(store, clock)
        self._metrics = metrics if metrics is not None else Metrics()
        self._peaks: dict[int, int] = {}
        self._lists_loaded: set[str] = set()
        hub.on_online = self._online

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def online(self, room: Room) -> int:
        """Everyone in the room now, on every daemon."""
        return self._hub.online(room.id)

    def room_json(self, room: Room) -> dict[str, Any]:
        return room_json(room, self._hub.online(room.id), self.now_ms())

    async def create_room(self, request: dict[str, Any], address: str | None = None,
                          ) -> tuple[Room, str]:
        """
        Create a room; returns it with its owner token, which is never shown again.
        C{address} is whom the client's address stands for, for rate limits.
        """
        self._limiter.create_room(address)
        name = room_name(required(request, "name", str))
        title = clean_text(field_of(request, "title", str, "") or "") or name
        if len(title) > MAX_TITLE:
            raise BadRequest(f"'title' is at most {MAX_TITLE} characters.")
        lifetime = _bounded(request, "lifetime", LIFETIME)
        max_length = _bounded(request, "max_length", MAX_LENGTH)
        hashtags = _hashtags(request)
        qa = field_of(request, "qa", bool, False)
        moderation = _moderation(request, "none")
        host_name = _host_name(request, DEFAULT_HOST_NAME)
        password = field_of(request, "password", str)
        password_hash = None
        if password is not None:
            if not 1 <= len(password) <= MAX_PASSWORD:
                raise BadRequest(f"'password' is 1 to {MAX_PASSWORD} characters.")
            password_hash = await self._in_thread(tokens.hash_password, password)
        owner_token = tokens.new_token()
        now = self.now_ms()
        new = NewRoom(
            name=name, title=title, created_at=now, expires_at=now + lifetime * 1000,
            max_length=max_length, hashtags=hashtags, password_hash=password_hash,
            owner_token_hash=tokens.token_hash(owner_token), qa=bool(qa), moderation=moderation,
            host_name=host_name,
        )
        pending = self._relay.event("room.created", name, self.room_json(Room(
            id=0, state="open", last_seq=0, **attrs.asdict(new, recurse=False))))
        room = await self._store.create_room(new, outbox=pending.outbox)
        pending.committed()
        return room, owner_token

    async def room(self, name: str) -> Room:
        room = None
        if ROOM_NAME.fullmatch(name.lower()):
            room = await self._store.room(name.lower())
        if room is None:
            raise NotFound(f"There is no room '{name}'.")
        return room

    async def join(self, room: Room, request: dict[str, Any], address: str | None = None,
                   ) -> tuple[Participant, str]:
        """Join C{room} under a nickname; returns the participant and its token."""
        self._limiter.join(address)
        nickname = clean_text(required(request, "nickname", str))
        if not 1 <= len(nickname) <= MAX_NICKNAME or "\n" in nickname or "\t" in nickname:
            raise BadRequest(f"A nickname is 1 to {MAX_NICKNAME} characters on one line.")
        password = field_of(request, "password", str)
        if room.state_at(self.now_ms()) == "closed":
            raise RoomClosed("This room is closed.")
        if room.password_hash is not None:
            if password is None or len(password) > MAX_PASSWORD or not await self._in_thread(
                    tokens.check_password, password, room.password_hash):
                raise Unauthorized("This room needs the right password.")
        token = tokens.new_token()
        participant = await self._store.add_participant(
            room.id, tokens.new_id(), nickname, tokens.token_hash(token), self.now_ms())
        return participant, token

    async def _room_with_participant(self, name: str, token: str,
                                     ) -> tuple[Room, Participant | None]:
        """
        The room named C{name} and its participant holding C{token} (None if no one
        does), read in one call: a post's lookups cost one trip to the store, not two.
        """
        found = None
        if ROOM_NAME.fullmatch(name.lower()):
            found = await self._store.room_with_participant(name.lower(),
                                                            tokens.token_hash(token))
        if found is None:
            raise NotFound(f"There is no room '{name}'.")
        return found

    async def participant(self, room: Room, token: str | None) -> Participant | None:
        """The participant holding C{token}, None without one; a wrong one is refused."""
        if token is None:
            return None
        participant = await self._store.participant(room.id, tokens.token_hash(token))
        if participant is None:
            raise Unauthorized("That token is not valid in this room.")
        return participant

    def is_owner(self, room: Room, token: str | None) -> bool:
        """Whether C{token} is the room's owner token."""
        return token is not None and hmac.compare_digest(tokens.token_hash(token),
                                                         room.owner_token_hash)

    async def check_read(self, room: Room, token: str | None) -> Participant | None:
        """
        Who reads: the participant holding C{token}, or None. A password room is read
        only with a participant's or the owner's token.
        """
        if self.is_owner(room, token):
            return None
        participant = await self.participant(room, token)
        if room.password_hash is not None and participant is None:
            raise Unauthorized("This room has a password: join it to read it.")
        return participant

    async def messages(self, room: Room, after: int, limit: int) -> tuple[list[Message], int]:
        return await self._store.messages(room, after, limit)

    async def post(self, name: str, token: str | None, request: dict[str, Any],
                   address: str | None = None) -> Message | Held:
        """
        Post C{request["body"]} as the holder of C{token} (with C{"host": true}, the owner
        as the host); fans it out once committed. A post the room holds for approval comes
        back L{Held}.
        """
        started = self._metrics.timer()
        if token is None:
            raise Unauthorized("Join the room to post: send your participant token.")
        body = clean_text(required(request, "body", str))
        question = bool(field_of(request, "question", bool, False))
        host = field_of(request, "host", bool, False)
        self._limiter.post_from(address)
        room, participant = await self._room_with_participant(name, token)
        if host:
            if not self.is_owner(room, token):
                raise Forbidden("Only the room's owner posts as the host: send the owner token.")
            return await self._host_post(room, body, question)
        if participant is None:
            raise Unauthorized("That token is not valid in this room.")
        self._check_post(room, participant, body, question)
        matched = await self._restricted(room, body)
        if matched and room.restricted.action == "refuse":
            raise RestrictedWord("This room does not take messages with some of those words.")
        self._limiter.post_by(participant.id)
        if matched or room.moderation == "pre":
            return await self._hold(room, participant, body, question, matched)
        message = await self._add(room, NewMessage(
            kind="chat", author=participant.nickname, participant_id=participant.id, body=body,
            created_at=self.now_ms(), question=question))
        self._metrics.post_latency.observe(self._metrics.timer() - started)
        return message

    async def _host_post(self, room: Room, body: str, question: bool) -> Message:
        """The owner posts as the host: while paused or locked too, never held."""
        if room.state_at(self.now_ms()) == "closed":
            raise RoomClosed("This room is closed.")
        self._check_body(room, body, question)
        return await self._add(room, NewMessage(
            kind="chat", author=room.host_name, participant_id=None, body=body,
            created_at=self.now_ms(), question=question, host=True))

    async def _restricted(self, room: Room, body: str) -> list[str]:
        """The room's restricted words that C{body} contains."""
        restricted = room.restricted
        if not restricted.words and not restricted.lists:
            return []
        lists = tuple(name for name in restricted.lists if name in words.BUILTIN_LISTS)
        for name in lists:
            if name not in self._lists_loaded:
                await self._in_thread(words.builtin_list, name)
                self._lists_loaded.add(name)
        return words.matcher(restricted.words, lists).matches(body)

    async def _hold(self, room: Room, participant: Participant, body: str, question: bool,
                    matched: list[str]) -> Held:
        """Put a post in the approval queue; its author's and the owner's sockets hear of it."""
        held = Held(id=tokens.new_id(), room_id=room.id, room=room.name,
                    participant_id=participant.id, author=participant.nickname, body=body,
                    question=question, created_at=self.now_ms(),
                    reason="restricted" if matched else "moderation", matched=tuple(matched))
        await self._store.hold(held)
        for event in held_events(held):
            self._bus.publish(event)
        return held

    async def held_posts(self, name: str, token: str | None) -> tuple[list[Held], bool]:
        """
        The approval queue: all of it for the owner, a participant's own posts for them;
        and whether it is the owner's view.
        """
        room = await self.room(name)
        if token is None:
            raise Unauthorized("Send the owner's token, or a participant's for their own posts.")
        if self.is_owner(room, token):
            return await self._store.held_posts(room, None), True
        participant = await self.participant(room, token)
        assert participant is not None
        return await self._store.held_posts(room, participant.id), False

    async def approve(self, name: str, token: str | None, held_id: str,
                      request: dict[str, Any]) -> Message:
        """Publish a held post, perhaps edited first, with the room's next seq."""
        room = await self.owned_room(name, token)
        if room.state_at(self.now_ms()) == "closed":
            raise RoomClosed("This room is closed.")
        held = await self._store.held_post(room, held_id) if len(held_id) <= MAX_ID else None
        if held is None:
            raise NotFound("There is no such post waiting for approval.")
        body = held.body
        if request.get("body") is not None:
            body = clean_text(required(request, "body", str))
            self._check_body(room, body, False)
        new = NewMessage(kind="chat", author=held.author, participant_id=held.participant_id,
                         body=body, created_at=self.now_ms(), question=held.question,
                         edited=body != held.body)

        async def move(outbox: Any) -> Message | None:
            return await self._store.approve(room, held.id, new, outbox=outbox)

        message = await self._add(room, new, move)
        self._bus.publish(released_event(room.id, held.id, held.participant_id, message.seq))
        return message

    async def reject(self, name: str, token: str | None, held_id: str) -> None:
        """Drop a held post for good: no one else ever sees it."""
        room = await self.owned_room(name, token)
        held = await self._store.reject(room, held_id) if len(held_id) <= MAX_ID else None
        if held is None:
            raise NotFound("There is no such post waiting for approval.")
        self._bus.publish(released_event(room.id, held.id, held.participant_id, None))

    async def vote(self, name: str, token: str | None, seq: int, on: bool) -> int:
        """A participant votes for a question (C{on}) or takes the vote back; its votes then."""
        if token is None:
            raise Unauthorized("Join the room to vote: send your participant token.")
        room = await self.room(name)
        participant = await self.participant(room, token)
        assert participant is not None
        state = room.state_at(self.now_ms())
        if state == "closed":
            raise RoomClosed("This room is closed.")
        if state == "paused":
            raise RoomPaused("This room is paused: voting is off for now.")
        if not room.qa:
            raise QaOff("This room does not take questions.")
        self._limiter.vote_by(participant.id)
        votes = await self._store.vote(room, seq, participant.id, on, self.now_ms())
        if votes is None:
            await self._question(room, seq)
            raise NotAQuestion(f"Message {seq} is not a question.")  # it has just been deleted
        self._changed(room, seq)
        return votes

    async def voted(self, name: str, token: str | None) -> list[int]:
        """The seqs of the questions a participant votes for."""
        if token is None:
            raise Unauthorized("Join the room to vote: send your participant token.")
        room = await self.room(name)
        participant = await self.participant(room, token)
        assert participant is not None
        return await self._store.voted(room, participant.id)

    async def _question(self, room: Room, seq: int) -> Message:
        """Question C{seq} of the room, or the error saying why there is none."""
        message = await self._store.message(room.id, seq)
        if message is None:
            raise NotFound(f"There is no message {seq} in this room.")
        if not message.question:
            raise NotAQuestion(f"Message {seq} is not a question.")
        return message

    async def questions(self, room: Room, top: bool, limit: int) -> tuple[list[Message], int]:
        return await self._store.questions(room, top, limit)

    async def update_message(self, name: str, token: str | None, seq: int,
                             request: dict[str, Any]) -> Message:
        """The owner marks a question C{answered}, or C{pinned} a message (or not)."""
        room = await self.owned_room(name, token)
        answered = field_of(request, "answered", bool)
        pinned = field_of(request, "pinned", bool)
        if answered is None and pinned is None:
            raise BadRequest("Send 'answered' or 'pinned' (true or false).")
        if room.state_at(self.now_ms()) == "closed":
            raise RoomClosed("This room is closed for good.")
        if answered is not None:
            await self._question(room, seq)
            if not await self._store.set_answered(room, seq, answered):
                raise NotFound(f"There is no message {seq} in this room.")
        else:
            message = await self._store.message(room.id, seq)
            if message is None or message.kind == "system":
                raise NotFound(f"There is no message {seq} in this room.")
        if pinned is not None and (pinned or room.pinned == seq):
            await self._pin(room, seq if pinned else None)
        self._changed(room, seq)
        message = await self._store.message(room.id, seq)
        if message is None:
            raise NotFound(f"There is no message {seq} in this room.")
        return message

    async def _pin(self, room: Room, seq: int | None) -> None:
        pinned = await self._store.pin(room, seq)
        if pinned is None:
            raise NotFound(f"There is no room '{room.name}'.")
        updated, before = pinned
        self._bus.publish(Event(room_id=room.id, frame=self.room_frame(updated)))
        if before is not None and before != seq:
            self._changed(room, before)

    def _changed(self, room: Room, seq: int) -> None:
        """Message C{seq} changed: everyone hears of it soon, at most twice a second."""
        def update() -> None:
            Deferred.fromCoroutine(self._announce(room, seq)).addErrback(
                self._failed, "announcing a change")

        self._hub.throttle(("message", room.id, seq), update)

    async def _announce(self, room: Room, seq: int) -> None:
        message = await self._store.announce_change(room, seq)
        if message is not None:
            self._bus.publish(updated_event(room.id, message))

    def _failed(self, failure: Failure, what: str) -> None:
        if failure.check(Unavailable):  # the database is away for now: no bug to trace
            self.log.warn("{what} failed: {error}", what=what, error=failure.getErrorMessage())
            return
        self.log.failure("{what} failed", failure, what=what)

    def _online(self, room_id: int, online: int) -> None:
        """The Hub announced who is online: keep the room's peak."""
        if not online:
            self._peaks.pop(room_id, None)
        elif online > self._peaks.get(room_id, 0):
            self._peaks[room_id] = online
            self._store.raise_peak(room_id, online).addErrback(self._failed, "keeping the peak")

    async def restricted(self, name: str, token: str | None) -> Restricted:
        """The room's restricted words, for its owner."""
        room = await self.owned_room(name, token)
        return room.restricted

    async def set_restricted(self, name: str, token: str | None,
                             request: dict[str, Any]) -> Restricted:
        """Change the room's restricted words, action or built-in lists; absent keeps them."""
        room = await self.owned_room(name, token)
        current = room.restricted
        listed = field_of(request, "words", list)
        try:
            kept = words.check_words(listed) if listed is not None else current.words
        except ValueError as e:
            raise BadRequest(str(e)) from None
        action = field_of(request, "action", str, current.action)
        if action not in RESTRICTED_ACTIONS:
            raise BadRequest("'action' is hold or refuse.")
        lists = field_of(request, "lists", list)
        if lists is not None:
            available = words.available_lists()
            if any(not isinstance(name, str) or name not in available for name in lists):
                raise BadRequest(f"'lists' names built-in lists: {', '.join(available)}.")
        restricted = Restricted(words=kept, action=action,
                                lists=tuple(dict.fromkeys(lists)) if lists is not None
                                else current.lists)
        if await self._store.set_restricted(room, restricted) is None:
            raise NotFound(f"There is no room '{name}'.")
        return restricted

    async def stats(self, name: str, token: str | None) -> RoomStats:
        """How the room's participants took part, for its owner."""
        return await self.room_stats(await self.owned_room(name, token))

    async def room_stats(self, room: Room) -> RoomStats:
        return await self._store.stats(room)

    async def ingest(self, name: str, author: str, body: str, source: dict[str, Any]) -> Message:
        """
        Add a C{social} message from a source (a post from a stream) to an open room:
        C{author} is its handle, C{source} says where it came from (C{network}, C{id},
        C{url}). A body over the room's longest is cut, not refused.
        """
        room = await self.room(name)
        state = room.state_at(self.now_ms())
        if state != "open":
            raise RoomClosed("This room is closed.") if state == "closed" else RoomPaused(
                "This room is paused: posting is off for now.")
        body = clean_text(body)
        if not body:
            raise Empty("The message is empty.")
        if len(body) > MAX_LENGTH[1]:
            body = body[:MAX_LENGTH[1] - 1] + "\u2026"
        return await self._add(room, NewMessage(
            kind="social", author=clean_text(author)[:MAX_NICKNAME * 4], participant_id=None,
            body=body, created_at=self.now_ms(), source=source))

    async def _add(self, room: Room, new: NewMessage,
                   store: Callable[[Any], Any] | None = None) -> Message:
        """
        Store a new message (through C{store}, given the outbox, if not a plain post),
        then fan it out and hand it to the webhooks.
        """
        pending = self._relay.event("message.created", room.name, {
            **message_json(Message(seq=0, room=room.name, **attrs.asdict(new, recurse=False))),
            "seq": None})  # the store's seq, once allocated
        if store is None:
            message = await self._store.post(room, new, outbox=pending.outbox)
        else:
            stored = await store(pending.outbox)
            if stored is None:
                raise NotFound("There is no such post waiting for approval.")
            message = stored
        self._bus.publish(Event(room_id=room.id, frame=message_frame(message), message=message))
        pending.committed(message.seq)
        return message

    async def owned_room(self, name: str, token: str | None) -> Room:
        """The room named C{name}, if C{token} is its owner token; else 401 or 403."""
        room = await self.room(name)
        if token is None:
            raise Unauthorized("Only the room's owner can do this: send the owner token.")
        if not hmac.compare_digest(tokens.token_hash(token), room.owner_token_hash):
            raise Forbidden("That is not this room's owner token.")
        return room

    async def update_room(self, name: str, token: str | None, request: dict[str, Any]) -> Room:
        """Change a room's C{state}, C{title}, C{hashtags} or C{lifetime} (from its creation)."""
        room = await self.owned_room(name, token)
        state = field_of(request, "state", str, room.state)
        if state not in ("open", "paused", "closed"):
            raise BadRequest("'state' is open, paused or closed.")
        title = room.title
        if request.get("title") is not None:  # null, as absent, keeps the value
            title = clean_text(required(request, "title", str)) or room.name
            if len(title) > MAX_TITLE:
                raise BadRequest(f"'title' is at most {MAX_TITLE} characters.")
        hashtags = _hashtags(request) if request.get("hashtags") is not None else room.hashtags
        expires_at = room.expires_at
        if request.get("lifetime") is not None:
            expires_at = room.created_at + _bounded(request, "lifetime", LIFETIME) * 1000
        qa = field_of(request, "qa", bool, room.qa)
        locked = field_of(request, "locked", bool, room.locked)
        moderation = _moderation(request, room.moderation)
        host_name = _host_name(request, room.host_name)
        if room.state_at(self.now_ms()) == "closed":
            raise RoomClosed("This room is closed for good.")
        changes = RoomChanges(state=state, title=title, hashtags=hashtags, expires_at=expires_at,
                              qa=bool(qa), moderation=moderation, locked=bool(locked),
                              host_name=host_name)
        pending = self._relay.event("room.updated", room.name, self.room_json(
            attrs.evolve(room, **attrs.asdict(changes, recurse=False))))
        updated = await self._store.update_room(room, changes, outbox=pending.outbox)
        if updated is None:
            raise NotFound(f"There is no room '{name}'.")
        self._bus.publish(Event(room_id=room.id, frame=self.room_frame(updated)))
        pending.committed()
        return updated

    def room_frame(self, room: Room) -> bytes:
        return room_frame(room, self._hub.online(room.id), self.now_ms())

    async def delete_room(self, name: str, token: str | None) -> None:
        """Delete a room and all in it; its live clients are told and disconnected."""
        room = await self.owned_room(name, token)
        pending = self._relay.event("room.deleted", room.name, self.room_json(room))
        if not await self._store.delete_room(room, outbox=pending.outbox):
            raise NotFound(f"There is no room '{name}'.")
        self._bus.publish(room_gone(room.id))
        pending.committed()

    async def close_expired(self, limit: int) -> list[Room]:
        """Close up to C{limit} rooms whose lifetime is over; their live clients are told."""
        rooms = await self._store.close_expired(self.now_ms(), limit)
        for room in rooms:
            self._bus.publish(Event(room_id=room.id, frame=self.room_frame(room)))
            await self._relay.emit("room.updated", room.name, self.room_json(room))
        return rooms

    async def purge_expired(self, grace_ms: int, limit: int) -> list[Room]:
        """Delete up to C{limit} rooms expired C{grace_ms} ago or more; their sockets close."""
        rooms = await self._store.purge_expired(self.now_ms() - grace_ms, limit)
        for room in rooms:
            self._bus.publish(room_gone(room.id))
            await self._relay.emit("room.deleted", room.name, self.room_json(room))
        return rooms

    async def delete_message(self, name: str, token: str | None, seq: int) -> None:
        """Delete one message of a room; live clients get a C{deleted} frame."""
        room = await self.owned_room(name, token)
        if not await self._delete(room, seq):
            raise NotFound(f"There is no message {seq} in this room.")

    async def retract(self, name: str, network: str, source_id: str) -> int | None:
        """
        Delete the social message a source's post became in room C{name}, because the
        post was deleted at its source; its seq, or None if there is none.
        """
        room = await self.room(name)
        seq = await self._store.social_message(room, network, source_id)
        if seq is None or not await self._delete(room, seq):
            return None
        return seq

    async def _delete(self, room: Room, seq: int) -> bool:
        """Delete one message; live clients get a C{deleted} frame. False if it is not there."""
        pending = self._relay.event("message.deleted", room.name, {"seq": seq})
        if not await self._store.delete_message(room, seq, outbox=pending.outbox):
            return False
        self._bus.publish(Event(room_id=room.id, frame=deleted_frame(seq)))
        pending.committed()
        return True

    async def participants(self, name: str, token: str | None) -> list[Participant]:
        """Everyone who joined the room, for its owner."""
        room = await self.owned_room(name, token)
        return await self._store.participants(room)

    async def set_muted(self, name: str, token: str | None, participant_id: str,
                        muted: bool) -> None:
        """Mute or unmute a participant: a muted one reads along but cannot post."""
        room = await self.owned_room(name, token)
        if len(participant_id) > MAX_ID or not await self._store.set_muted(
                room, participant_id, muted):
            raise NotFound(f"There is no participant '{participant_id}' in this room.")

    def _check_post(self, room: Room, participant: Participant, body: str,
                    question: bool = False) -> None:
        state = room.state_at(self.now_ms())
        if state == "closed":
            raise RoomClosed("This room is closed.")
        if state == "paused":
            raise RoomPaused("This room is paused: posting is off for now.")
        if participant.muted:
            raise Muted("You are muted in this room.")
        if room.locked:
            raise RoomLocked("This room is locked: only the host posts for now.")
        self._check_body(room, body, question)

    def _check_body(self, room: Room, body: str, question: bool) -> None:
        if question and not room.qa:
            raise QaOff("This room does not take questions.")
        if not body:
            raise Empty("The message is empty.")
        if len(body) > room.max_length:
            raise TooLong(f"Messages in this room are at most {room.max_length} characters.")
