"""Tests for L{tmd.chat}: the rules of rooms, joins and posts, on a real SQLite store."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import ImmediateReactor, in_thread_now, open_store, reject, resolve
from tmd.chat import Chat
from tmd.errors import (
    BadRequest,
    Empty,
    InvalidName,
    NameTaken,
    NotFound,
    RoomClosed,
    RoomPaused,
    TooLong,
    Unauthorized,
)
from tmd.hub import Hub
from tmd.model import Event, Participant, Room

START = 1_764_000_000.25
"""The clock's time at the start of each test, in seconds (2025-11-24T16:00:00.250Z)."""
START_MS = 1_764_000_000_250


class Recorder:
    """A hub subscriber that keeps every event, and can look at the store as each arrives."""

    def __init__(self, on_deliver: Any = None) -> None:
        self.events: list[Event] = []
        self._on_deliver = on_deliver

    def deliver(self, event: Event) -> None:
        self.events.append(event)
        if self._on_deliver is not None:
            self._on_deliver(event)


class ChatTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = ImmediateReactor()
        self.clock.advance(START)
        self.store = open_store(self, reactor=self.clock)
        self.hub = Hub(self.clock)
        self.chat = Chat(self.store, self.hub, self.clock, in_thread_now)

    def create(self, **request: Any) -> tuple[Room, str]:
        request.setdefault("name", "physics-101")
        return resolve(self, self.chat.create_room(request))

    def refused(self, request: dict[str, Any], error: type[Exception]) -> str:
        """Creating a room from C{request} fails with C{error}; returns its message."""
        failure = reject(self, self.chat.create_room(request), error)
        return str(failure.value)

    def join(self, room: Room, nickname: str = "ada", **request: Any) -> tuple[Participant, str]:
        return resolve(self, self.chat.join(room, {"nickname": nickname, **request}))

    def expire(self, room: Room) -> None:
        """Move the clock to the moment C{room} expires."""
        self.clock.advance(room.expires_at / 1000 - self.clock.seconds())


class CreateRoomTests(ChatTestCase):
    def test_defaults(self) -> None:
        """A room made from a name alone: titled by its name, open, default lifetime and length."""
        room, _ = self.create()
        self.assertEqual(
            (room.name, room.title, room.state, room.max_length, room.hashtags, room.last_seq,
             room.password_hash),
            ("physics-101", "physics-101", "open", 280, (), 0, None))
        self.assertEqual(resolve(self, self.store.room("physics-101")), room)

    def test_times(self) -> None:
        """created_at is the clock's now; expires_at is lifetime seconds later, in ms."""
        room, _ = self.create(lifetime=7200)
        self.assertEqual((room.created_at, room.expires_at), (START_MS, START_MS + 7_200_000))
        default, _ = self.create(name="default")
        self.assertEqual(default.expires_at - default.created_at, 86_400_000)

    def test_lower_case(self) -> None:
        """The name is stored lower-case."""
        room, _ = self.create(name="Physics-101")
        self.assertEqual(room.name, "physics-101")
        self.refused({"name": "PHYSICS-101"}, NameTaken)

    def test_name_lengths(self) -> None:
        """Names of 2 and of 63 characters are fine."""
        short, _ = self.create(name="ab")
        long, _ = self.create(name="a" * 63)
        self.assertEqual((short.name, long.name), ("ab", "a" * 63))

    def test_invalid_names(self) -> None:
        """Too short, too long, a leading dash, other characters or reserved words: InvalidName."""
        for name in ["a", "-ab", "a_b", "a b", "a" * 64, "api", "API", "static", "", "café"]:
            message = self.refused({"name": name}, InvalidName)
            self.assertIn("Room names are", message, name)

    def test_name_missing(self) -> None:
        """A request without a name, or with a null one, is a BadRequest."""
        self.assertIn("'name'", self.refused({}, BadRequest))
        self.assertIn("'name'", self.refused({"name": None}, BadRequest))

    def test_wrong_types(self) -> None:
        """Fields of the wrong JSON type are a BadRequest naming the field."""
        cases: list[tuple[dict[str, Any], str]] = [
            ({"name": 5}, "'name'"),
            ({"name": "ok", "lifetime": "x"}, "'lifetime'"),
            ({"name": "ok", "lifetime": True}, "'lifetime'"),
            ({"name": "ok", "lifetime": 3600.5}, "'lifetime'"),
            ({"name": "ok", "max_length": "280"}, "'max_length'"),
            ({"name": "ok", "title": 1}, "'title'"),
            ({"name": "ok", "hashtags": "#a"}, "'hashtags'"),
            ({"name": "ok", "password": 1234}, "'password'"),
        ]
        for request, field in cases:
            self.assertIn(field, self.refused(request, BadRequest), request)

    def test_lifetime_bounds(self) -> None:
        """A lifetime is 3600 to 31536000 seconds."""
        low, _ = self.create(name="low", lifetime=3600)
        high, _ = self.create(name="high", lifetime=31_536_000)
        self.assertEqual(high.expires_at - low.expires_at, (31_536_000 - 3600) * 1000)
        for lifetime in (3599, 31_536_001, 0, -1):
            self.assertIn("'lifetime'",
                          self.refused({"name": "x1", "lifetime": lifetime}, BadRequest))

    def test_max_length_bounds(self) -> None:
        """max_length is 1 to 1000."""
        one, _ = self.create(name="one", max_length=1)
        most, _ = self.create(name="most", max_length=1000)
        self.assertEqual((one.max_length, most.max_length), (1, 1000))
        for max_length in (0, 1001):
            self.assertIn("'max_length'",
                          self.refused({"name": "x1", "max_length": max_length}, BadRequest))

    def test_hashtags(self) -> None:
        """Hashtags get a '#' if they lack one, keep their order and lose duplicates (any case)."""
        room, _ = self.create(hashtags=["phys101", "#phys101", "#optics", "waves", "Optics"])
        self.assertEqual(room.hashtags, ("#phys101", "#optics", "#waves"))

    def test_hashtags_invalid(self) -> None:
        """More than 10 hashtags, or one that is not letters, digits or '_', is a BadRequest."""
        self.refused({"name": "x1", "hashtags": [f"t{i}" for i in range(11)]}, BadRequest)
        for tag in ("", "#", "two words", "##a", "a-b", 5, None):
            self.refused({"name": "x1", "hashtags": [tag]}, BadRequest)
        room, _ = self.create(hashtags=[f"t{i}" for i in range(10)])
        self.assertEqual(len(room.hashtags), 10)

    def test_title(self) -> None:
        """The title is trimmed; a blank one means the name."""
        titled, _ = self.create(name="one", title="  Physics 101\t")
        blank, _ = self.create(name="two", title="   ")
        self.assertEqual((titled.title, blank.title), ("Physics 101", "two"))

    def test_title_too_long(self) -> None:
        """A title over 200 characters is a BadRequest; 200 is fine."""
        self.refused({"name": "x1", "title": "t" * 201}, BadRequest)
        room, _ = self.create(title="t" * 200)
        self.assertEqual(len(room.title), 200)

    def test_owner_token(self) -> None:
        """The owner token is returned; only its SHA-256 is stored."""
        room, token = self.create()
        self.assertGreaterEqual(len(token), 40)
        self.assertEqual(room.owner_token_hash, hashlib.sha256(token.encode()).digest())
        _, other_token = self.create(name="other")
        self.assertNotEqual(other_token, token)

    def test_password_hashed(self) -> None:
        """A password is stored as an scrypt hash, never as itself."""
        room, _ = self.create(password="sesame")
        assert room.password_hash is not None
        self.assertTrue(room.password_hash.startswith("scrypt$"))
        self.assertNotIn("sesame", room.password_hash)
        self.assertTrue(room.has_password)

    def test_password_bounds(self) -> None:
        """A password is 1 to 200 characters."""
        self.refused({"name": "x1", "password": ""}, BadRequest)
        self.refused({"name": "x1", "password": "p" * 201}, BadRequest)
        self.assertIsNone(resolve(self, self.store.room("x1")))

    def test_room_json(self) -> None:
        """room_json counts who is online from the hub."""
        room, _ = self.create(hashtags=["phys101"])
        self.hub.subscribe(room.id, Recorder())
        self.hub.subscribe(room.id, Recorder())
        self.assertEqual(self.chat.room_json(room), {
            "name": "physics-101", "title": "physics-101", "state": "open",
            "created_at": "2025-11-24T16:00:00.250Z", "expires_at": "2025-11-25T16:00:00.250Z",
            "max_length": 280, "has_password": False, "hashtags": ["#phys101"], "online": 2,
            "last_seq": 0, "id": str(room.id), "qa": False, "moderation": "none", "locked": False,
            "host_name": "Host", "pinned": None,
        })

    def test_room_json_closed(self) -> None:
        """Once expired, a room shows as closed (and just before, as open)."""
        room, _ = self.create(lifetime=3600)
        self.clock.advance(3599.5)
        self.assertEqual(self.chat.room_json(room)["state"], "open")
        self.expire(room)
        self.assertEqual(self.chat.room_json(room)["state"], "closed")

    def test_room_lookup(self) -> None:
        """C{room} finds a room whatever the case; an unknown or malformed name is NotFound."""
        created, _ = self.create()
        self.assertEqual(resolve(self, self.chat.room("PHYSICS-101")), created)
        reject(self, self.chat.room("chemistry"), NotFound)
        reject(self, self.chat.room("no such/room"), NotFound)


class JoinTests(ChatTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.room, self.owner_token = self.create()

    def test_join(self) -> None:
        """Joining gives a participant with a trimmed nickname and a token that finds it."""
        participant, token = self.join(self.room, "  Ada Lovelace ")
        self.assertEqual((participant.nickname, participant.room_id, participant.muted),
                         ("Ada Lovelace", self.room.id, False))
        self.assertEqual(resolve(self, self.chat.participant(self.room, token)), participant)

    def test_nickname_lengths(self) -> None:
        """Nicknames of 1 and 32 characters are fine."""
        one, _ = self.join(self.room, "a")
        most, _ = self.join(self.room, "b" * 32)
        self.assertEqual((one.nickname, most.nickname), ("a", "b" * 32))

    def test_nickname_invalid(self) -> None:
        """An empty, blank, 33-character or multi-line nickname is a BadRequest."""
        for nickname in ["", "   ", "x" * 33, "ada\nlovelace", "ada\r\nlovelace", "a\tb", 7]:
            failure = reject(self, self.chat.join(self.room, {"nickname": nickname}), BadRequest)
            self.assertIn("nickname", str(failure.value).lower(), repr(nickname))
        reject(self, self.chat.join(self.room, {}), BadRequest)

    def test_nickname_taken(self) -> None:
        """A nickname differing only in case from a participant's is NameTaken."""
        self.join(self.room, "Ada")
        reject(self, self.chat.join(self.room, {"nickname": "ADA"}), NameTaken)
        reject(self, self.chat.join(self.room, {"nickname": " ada "}), NameTaken)

    def test_nickname_look_alikes(self) -> None:
        """Full-width, decomposed and invisibly padded copies of a nickname are NameTaken."""
        self.join(self.room, "Ada")
        self.join(self.room, "Jos\u00e9")
        for copy in ("\uff21\uff44\uff41", "ada\u200b", "\u202eAda", "Jose\u0301"):
            reject(self, self.chat.join(self.room, {"nickname": copy}), NameTaken)

    def test_nickname_cleaned(self) -> None:
        """Bidi overrides and zero-width spaces are dropped from the nickname people see."""
        participant, _ = self.join(self.room, "\u202eev\u200be")
        self.assertEqual(participant.nickname, "eve")

    def test_closed(self) -> None:
        """Joining an expired room is RoomClosed."""
        self.expire(self.room)
        reject(self, self.chat.join(self.room, {"nickname": "ada"}), RoomClosed)

    def test_password(self) -> None:
        """A password room refuses a join without the right password, and takes the right one."""
        room, _ = self.create(name="secret", password="sesame")
        for request in ({"nickname": "ada"}, {"nickname": "ada", "password": "Sesame"},
                        {"nickname": "ada", "password": "s" * 201}):
            reject(self, self.chat.join(room, request), Unauthorized)
        participant, _ = self.join(room, "ada", password="sesame")
        self.assertEqual(participant.nickname, "ada")

    def test_password_ignored(self) -> None:
        """A room without a password lets in someone who sends one anyway."""
        participant, _ = self.join(self.room, "ada", password="whatever")
        self.assertEqual(participant.room_id, self.room.id)

    def test_participant_bad_token(self) -> None:
        """A token that is not a participant's in this room is Unauthorized."""
        other, _ = self.create(name="other")
        _, token = self.join(other, "ada")
        reject(self, self.chat.participant(self.room, token), Unauthorized)
        reject(self, self.chat.participant(self.room, self.owner_token), Unauthorized)
        self.assertIsNone(resolve(self, self.chat.participant(self.room, None)))


class PostTests(ChatTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.room, self.owner_token = self.create(max_length=5)
        self.participant, self.token = self.join(self.room, "ada")

    def post(self, body: Any, token: str | None = None, name: str = "physics-101") -> Any:
        return self.chat.post(name, token if token is not None else self.token, {"body": body})

    def test_post(self) -> None:
        """A post is stored with the next seq, the author's nickname and the clock's time."""
        message = resolve(self, self.post("hi"))
        self.assertEqual(
            (message.seq, message.room, message.kind, message.author, message.body,
             message.created_at, message.source),
            (1, "physics-101", "chat", "ada", "hi", START_MS, None))
        self.assertEqual(resolve(self, self.post("again")).seq, 2)
        messages, last_seq = resolve(self, self.chat.messages(self.room, 0, 10))
        self.assertEqual(([m.body for m in messages], last_seq), (["hi", "again"], 2))

    def test_published(self) -> None:
        """A post is published to the room's subscribers as a message frame."""
        watcher = Recorder()
        self.hub.subscribe(self.room.id, watcher)
        message = resolve(self, self.post("hi"))
        [event] = watcher.events
        self.assertEqual((event.room_id, event.message, event.seq), (self.room.id, message, 1))
        self.assertEqual(json.loads(event.frame), {"type": "message", "message": {
            "seq": 1, "room": "physics-101", "kind": "chat", "author": "ada", "body": "hi",
            "created_at": "2025-11-24T16:00:00.250Z", "source": None,
            "participant_id": message.participant_id, "question": False, "votes": 0,
            "answered": False, "pinned": False, "host": False, "edited": False}})
        self.assertIsNotNone(message.participant_id)

    def test_published_after_commit(self) -> None:
        """When the hub delivers a message, the store already holds it."""
        stored: list[list[int]] = []

        def look(event: Event) -> None:
            messages, _ = resolve(self, self.store.messages(self.room, 0, 10))
            stored.append([m.seq for m in messages])

        self.hub.subscribe(self.room.id, Recorder(look))
        resolve(self, self.post("one"))
        resolve(self, self.post("two"))
        self.assertEqual(stored, [[1], [1, 2]])

    def test_refused_not_published(self) -> None:
        """A refused post is neither stored nor published."""
        watcher = Recorder()
        self.hub.subscribe(self.room.id, watcher)
        reject(self, self.post("toolong"), TooLong)
        reject(self, self.post(" "), Empty)
        self.assertEqual(watcher.events, [])
        self.assertEqual(resolve(self, self.chat.messages(self.room, 0, 10)), ([], 0))

    def test_cleaned(self) -> None:
        """The body is trimmed, CRLF and CR become LF, other control characters are dropped."""
        room, _ = self.create(name="long")
        _, token = self.join(room, "ada")
        message = resolve(self, self.chat.post("long", token, {
            "body": " \t one\r\ntwo\rthree\x00\x07\x1b[31m\u0085 four\t\n "}))
        self.assertEqual(message.body, "one\ntwo\nthree[31m four")

    def test_empty(self) -> None:
        """A body that is empty once cleaned is Empty."""
        for body in ["", "   ", "\r\n\t", "\x00\x01"]:
            reject(self, self.post(body), Empty)

    def test_body_required(self) -> None:
        """A missing or non-string body is a BadRequest."""
        reject(self, self.chat.post("physics-101", self.token, {}), BadRequest)
        reject(self, self.post(["hi"]), BadRequest)

    def test_length_in_code_points(self) -> None:
        """Length counts code points: five emoji fit in max_length 5, six do not."""
        self.assertEqual(resolve(self, self.post("\U0001f600" * 5)).body, "\U0001f600" * 5)
        reject(self, self.post("\U0001f600" * 6), TooLong)
        self.assertEqual(resolve(self, self.post(" abcde ")).body, "abcde")

    def test_no_token(self) -> None:
        """Posting without a token is Unauthorized."""
        failure = reject(self, self.chat.post("physics-101", None, {"body": "hi"}), Unauthorized)
        self.assertIn("Join", str(failure.value))

    def test_foreign_token(self) -> None:
        """A participant token of another room, or the owner token, is Unauthorized."""
        self.create(name="other")
        other_room = resolve(self, self.chat.room("other"))
        _, other_token = self.join(other_room, "ada")
        reject(self, self.post("hi", token=other_token), Unauthorized)
        reject(self, self.post("hi", token=self.owner_token), Unauthorized)
        reject(self, self.post("hi", token="not-a-token"), Unauthorized)

    def test_closed(self) -> None:
        """Posting to an expired room is RoomClosed."""
        self.expire(self.room)
        reject(self, self.post("hi"), RoomClosed)

    def test_unknown_room(self) -> None:
        """Posting to a room that does not exist is NotFound."""
        reject(self, self.post("hi", name="chemistry"), NotFound)
        reject(self, self.post("hi", name="no/such"), NotFound)

    def test_room_name_case(self) -> None:
        """The room may be named in any case when posting."""
        self.assertEqual(resolve(self, self.post("hi", name="Physics-101")).room, "physics-101")


class IngestTests(ChatTestCase):
    SOURCE = {"network": "twitter", "id": "1460323737035677698", "url": "https://x.com/a/1"}

    def setUp(self) -> None:
        super().setUp()
        self.room, self.owner_token = self.create(max_length=5)

    def ingest(self, body: str, author: str = "@ada") -> Any:
        return self.chat.ingest("physics-101", author, body, self.SOURCE)

    def test_social(self) -> None:
        """A source's post is a social message with its handle and source, published."""
        watcher = Recorder()
        self.hub.subscribe(self.room.id, watcher)
        message = resolve(self, self.ingest(" light is a wave \u200b"))
        self.assertEqual(
            (message.seq, message.kind, message.author, message.body, message.source,
             message.participant_id),
            (1, "social", "@ada", "light is a wave", self.SOURCE, None))
        self.assertEqual([event.message for event in watcher.events], [message])

    def test_long_cut(self) -> None:
        """A post longer than any room's limit is cut with an ellipsis, not refused."""
        message = resolve(self, self.ingest("x" * 5000))
        self.assertEqual((len(message.body), message.body[-1]), (1000, "\u2026"))

    def test_refused(self) -> None:
        """Nothing is added to a paused, closed or missing room, nor an empty post."""
        reject(self, self.ingest(" \n "), Empty)
        resolve(self, self.chat.update_room("physics-101", self.owner_token, {"state": "paused"}))
        reject(self, self.ingest("hi"), RoomPaused)
        self.expire(self.room)
        reject(self, self.ingest("hi"), RoomClosed)
        reject(self, self.chat.ingest("nowhere", "@a", "hi", self.SOURCE), NotFound)
        self.assertEqual(resolve(self, self.chat.messages(self.room, 0, 10))[0], [])


class RetractTests(ChatTestCase):
    def test_retract(self) -> None:
        """A social message whose post was deleted at its source is deleted, with a frame."""
        room, _ = self.create()
        source = {"network": "mastodon", "id": "110", "url": None}
        message = resolve(self, self.chat.ingest("physics-101", "@ada@x.org", "hi", source))
        watcher = Recorder()
        self.hub.subscribe(room.id, watcher)
        self.assertEqual(resolve(self, self.chat.retract("physics-101", "mastodon", "110")),
                         message.seq)
        self.assertEqual([json.loads(event.frame) for event in watcher.events],
                         [{"type": "deleted", "seq": message.seq}])
        self.assertEqual(resolve(self, self.chat.messages(room, 0, 10))[0], [])
        self.assertIsNone(resolve(self, self.chat.retract("physics-101", "mastodon", "110")))
        self.assertIsNone(resolve(self, self.chat.retract("physics-101", "twitter", "110")))
        self.assertEqual(len(watcher.events), 1)
        reject(self, self.chat.retract("nowhere", "mastodon", "110"), NotFound)


class CheckReadTests(ChatTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.room, self.owner_token = self.create(password="sesame")
        self.participant, self.token = self.join(self.room, "ada", password="sesame")

    def test_password_room_no_token(self) -> None:
        """A password room cannot be read without a token."""
        reject(self, self.chat.check_read(self.room, None), Unauthorized)

    def test_password_room_wrong_token(self) -> None:
        """A password room cannot be read with a token that is not its own."""
        reject(self, self.chat.check_read(self.room, "not-a-token"), Unauthorized)

    def test_participant(self) -> None:
        """A participant's token reads the room, and says who reads."""
        self.assertEqual(resolve(self, self.chat.check_read(self.room, self.token)),
                         self.participant)

    def test_owner(self) -> None:
        """The owner's token reads the room (as no participant)."""
        self.assertIsNone(resolve(self, self.chat.check_read(self.room, self.owner_token)))

    def test_open_room(self) -> None:
        """A room without a password is read by anyone."""
        room, _ = self.create(name="open")
        self.assertIsNone(resolve(self, self.chat.check_read(room, None)))
        reject(self, self.chat.check_read(room, self.token), Unauthorized)
