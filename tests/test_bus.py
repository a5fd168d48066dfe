"""
Tests for L{tmd.bus}: ordering, notices, and fan-out between daemons through the
real PostgreSQL (several daemons in one process, each its own store, Hub and Bus).
"""

from __future__ import annotations

import json
from typing import Any

from attrs import define
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.helpers import eventually, in_thread_now
from tests.postgres import execute, fresh_schema, terminate
from tests.test_hub import Recorder
from tmd.bus import HOLD, NOTIFY_LIMIT, PRESENCE_REFRESH, Orderer, PostgresBus, message_notice
from tmd.chat import Chat
from tmd.hub import PRESENCE_INTERVAL, Hub
from tmd.model import Event, Message, NewMessage, Room
from tmd.store.postgres import PostgresStore
from tmd.wire import message_frame


def message_event(seq: int, room_id: int = 1) -> Event:
    message = Message(seq=seq, room="r", kind="chat", author="ada", body=f"m{seq}",
                      created_at=0)
    return Event(room_id=room_id, frame=message_frame(message), message=message)


def seqs(recorder: Recorder) -> list[int | None]:
    return [event.seq for event in recorder.events if event.message is not None]


class OrdererTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.hub = Hub(self.clock)
        self.watcher = Recorder()
        self.hub.subscribe(1, self.watcher)
        self.clock.advance(PRESENCE_INTERVAL)
        self.watcher.events.clear()
        self.order = Orderer(self.hub, self.clock)

    def test_in_order(self) -> None:
        """Messages in seq order go out at once."""
        for seq in (4, 5, 6):
            self.order.publish(message_event(seq))
        self.assertEqual(seqs(self.watcher), [4, 5, 6])

    def test_duplicate(self) -> None:
        """A message already given (or older) is dropped."""
        for seq in (4, 5, 5, 3):
            self.order.publish(message_event(seq))
        self.assertEqual(seqs(self.watcher), [4, 5])

    def test_early_waits_for_predecessor(self) -> None:
        """A message that comes before its predecessor waits for it; then both go, in order."""
        for seq in (1, 3, 4):
            self.order.publish(message_event(seq))
        self.assertEqual(seqs(self.watcher), [1])
        self.order.publish(message_event(2))
        self.assertEqual(seqs(self.watcher), [1, 2, 3, 4])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_gap_given_up(self) -> None:
        """If the predecessor does not come within HOLD, the held ones go out in order."""
        for seq in (1, 4, 3):
            self.order.publish(message_event(seq))
        self.clock.advance(HOLD)
        self.assertEqual(seqs(self.watcher), [1, 3, 4])
        self.order.publish(message_event(2))
        self.order.publish(message_event(5))
        self.assertEqual(seqs(self.watcher), [1, 3, 4, 5])

    def test_other_events_at_once(self) -> None:
        """Events without a seq (presence, say) are not held."""
        self.order.publish(message_event(1))
        self.order.publish(message_event(3))
        other = Event(room_id=1, frame=b'{"type":"presence","online":2}')
        self.order.publish(other)
        self.assertEqual(self.watcher.events[-1], other)

    def test_room_without_subscribers(self) -> None:
        """Messages of rooms nobody here watches are dropped, and nothing is kept for them."""
        self.order.publish(message_event(1, room_id=2))
        self.order.publish(message_event(5, room_id=2))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        watcher = Recorder()
        self.hub.subscribe(2, watcher)
        self.order.publish(message_event(6, room_id=2))
        self.assertEqual(seqs(watcher), [6])

    def test_sync(self) -> None:
        """C{sync} releases what was held and tells subscribers the room's last seq."""
        self.order.publish(message_event(1))
        self.order.publish(message_event(3))
        self.order.sync(1, 7)
        self.assertEqual(seqs(self.watcher), [1, 3])
        self.assertEqual(self.watcher.events[-1].last_seq, 7)
        self.order.publish(message_event(7))
        self.order.publish(message_event(8))
        self.assertEqual(seqs(self.watcher), [1, 3, 8])
        self.assertEqual(self.clock.getDelayedCalls(), [])


def room(room_id: int = 12, name: str = "physics-101") -> Room:
    return Room(id=room_id, name=name, title="t", state="open", created_at=0, expires_at=1,
                max_length=1000, password_hash=None, owner_token_hash=b"", hashtags=(),
                last_seq=0)


def notice(head: str, seq: int, tail: str) -> dict[str, Any]:
    """The notice as the database sends it: C{head || seq || tail}."""
    payload = f"{head}{seq}{tail}"
    assert len(payload.encode()) <= NOTIFY_LIMIT
    decoded: dict[str, Any] = json.loads(payload)
    return decoded


class MessageNoticeTests(SynchronousTestCase):
    def test_whole_message(self) -> None:
        """A message that fits travels whole: origin, kind, room, seq and every field."""
        new = NewMessage(kind="chat", author="ada", participant_id="p", body='say "hi"\n',
                         created_at=5)
        head, tail = message_notice("o1", room(), new)
        self.assertEqual(notice(head, 42, tail), {
            "o": "o1", "k": "m", "r": 12, "n": "physics-101", "s": 42,
            "m": {"kind": "chat", "author": "ada", "body": 'say "hi"\n', "created_at": 5,
                  "source": None, "participant_id": "p"}})

    def test_longest_chat_fits(self) -> None:
        """The longest chat message (1000 characters of four UTF-8 bytes each) still fits."""
        new = NewMessage(kind="chat", author="a" * 32, participant_id="p",
                         body="\U0001f600" * 1000, created_at=5)
        head, tail = message_notice("o" * 22, room(2**62), new)
        self.assertEqual(notice(head, 2**62, tail)["m"]["body"], "\U0001f600" * 1000)

    def test_too_big(self) -> None:
        """A message too big for a NOTIFY travels as its seq alone, to be fetched."""
        new = NewMessage(kind="social", author="@ada", participant_id=None, body="x",
                         created_at=5, source={"text": "y" * NOTIFY_LIMIT})
        head, tail = message_notice("o1", room(), new)
        self.assertEqual(tail, "}")
        self.assertEqual(notice(head, 9, tail),
                         {"o": "o1", "k": "m", "r": 12, "n": "physics-101", "s": 9})


@define
class Node:
    """One daemon's share of the work: a store, a Hub and a Bus (and the chat core)."""

    store: PostgresStore
    hub: Hub
    bus: PostgresBus
    chat: Chat
    clock: Clock

    def watch(self, room_id: int) -> Recorder:
        """A subscriber of C{room_id} on this daemon."""
        recorder = Recorder()
        self.hub.subscribe(room_id, recorder)
        return recorder


class PostgresBusTests(TestCase):
    """Several daemons on one real PostgreSQL schema."""

    async def setUp(self) -> None:
        self.url = fresh_schema(self)
        self.a = await self.node("a")
        self.b = await self.node("b")
        self.room, self.owner = await self.a.chat.create_room(
            {"name": "physics-101", "max_length": 1000})
        _, self.ada = await self.a.chat.join(self.room, {"nickname": "ada"})
        _, self.bob = await self.b.chat.join(self.room, {"nickname": "bob"})

    async def node(self, name: str) -> Node:
        # Each daemon names its connections, so a test can cut one daemon off.
        store = PostgresStore(f"{self.url}_{name}", reactor, 2)
        await store.open()
        self.addCleanup(store.close)
        clock = Clock()
        hub = Hub(clock)
        bus = PostgresBus(store, hub, clock)
        await bus.start()
        self.addCleanup(bus.stop)
        return Node(store, hub, bus, Chat(store, hub, reactor, in_thread_now, bus), clock)

    async def test_message_crosses(self) -> None:
        """A post on daemon A reaches B's subscribers, the same frame; A's own go out once."""
        on_a, on_b = self.a.watch(self.room.id), self.b.watch(self.room.id)
        posted = await self.a.chat.post("physics-101", self.ada, {"body": "Is light a wave?"})
        await eventually(lambda: seqs(on_b) == [1])
        self.assertEqual(on_b.events[0].message, posted)
        self.assertEqual(on_b.events[0].frame, on_a.events[0].frame)
        await self.b.chat.post("physics-101", self.bob, {"body": "Both"})
        await eventually(lambda: seqs(on_a) == [1, 2])
        self.assertEqual(seqs(on_b), [1, 2])

    async def test_too_big_fetched(self) -> None:
        """A message too big for a NOTIFY is fetched by seq and still arrives whole."""
        on_b = self.b.watch(self.room.id)
        source = {"network": "mastodon", "text": "\u00e9" * 4000}
        new = NewMessage(kind="social", author="@ada", participant_id=None, body="big",
                         created_at=1, source=source)
        self.assertEqual(message_notice(self.a.store.origin, self.room, new)[1], "}")
        await self.a.store.post(self.room, new)
        await eventually(lambda: seqs(on_b) == [1])
        received = on_b.events[0].message
        assert received is not None
        self.assertEqual((received.body, received.source), ("big", source))

    async def test_interleaved_posts_in_order(self) -> None:
        """Concurrent posts on two daemons reach every subscriber in seq order, once each."""
        on_a, on_b = self.a.watch(self.room.id), self.b.watch(self.room.id)
        # (A subscriber's first message sets where the Bus starts counting; a real client
        # catches up from the store from its own seq, a Recorder cannot.)
        await self.a.chat.post("physics-101", self.ada, {"body": "first"})
        await eventually(lambda: seqs(on_a) == seqs(on_b) == [1])
        posts = [
            (self.a.chat.post("physics-101", self.ada, {"body": f"a{i}"}) if i % 2 else
             self.b.chat.post("physics-101", self.bob, {"body": f"b{i}"}))
            for i in range(2, 61)
        ]
        await gatherResults([Deferred.fromCoroutine(post) for post in posts])
        await eventually(lambda: len(seqs(on_a)) == len(seqs(on_b)) == 60)
        self.assertEqual((seqs(on_a), seqs(on_b)), (list(range(1, 61)), list(range(1, 61))))

    async def test_presence_added_up(self) -> None:
        """Each daemon's subscribers count on every daemon, and in the presence frames."""
        on_a = self.a.watch(self.room.id)
        self.a.watch(self.room.id)
        self.b.watch(self.room.id)
        self.a.clock.advance(PRESENCE_INTERVAL)
        self.b.clock.advance(PRESENCE_INTERVAL)
        await eventually(lambda: self.a.hub.online(self.room.id) == 3 ==
                         self.b.hub.online(self.room.id))
        self.a.clock.advance(PRESENCE_INTERVAL)
        self.assertEqual(on_a.presence()[-1], 3)

    async def test_hello_and_bye(self) -> None:
        """A daemon that starts learns the others' counts; one that stops is no longer counted."""
        self.a.watch(self.room.id)
        self.a.clock.advance(PRESENCE_INTERVAL)
        c = await self.node("c")

        def a_answered() -> bool:
            self.a.clock.advance(0)  # A answers C's hello on its next turn
            return c.hub.online(self.room.id) == 1

        await eventually(a_answered)
        await self.a.bus.stop()
        await eventually(lambda: c.hub.online(self.room.id) == 0)

    async def test_silent_daemon_expires(self) -> None:
        """Counts of a daemon that vanished without a goodbye expire after a few refreshes."""
        self.a.watch(self.room.id)
        self.a.clock.advance(PRESENCE_INTERVAL)
        await eventually(lambda: self.b.hub.online(self.room.id) == 1)
        self.b.clock.advance(PRESENCE_REFRESH * 4)
        self.assertEqual(self.b.hub.online(self.room.id), 0)

    async def test_listen_reconnects_and_resyncs(self) -> None:
        """
        When a daemon loses its connections, it reconnects and LISTENs again by itself,
        then tells its subscribers the last seq of their rooms, so none misses a post
        made elsewhere meanwhile.
        """
        on_b = self.b.watch(self.room.id)
        await self.a.chat.post("physics-101", self.ada, {"body": "before"})
        await eventually(lambda: seqs(on_b) == [1])
        self.assertEqual(terminate(f"{self.url}_b"), 3)
        await eventually(lambda: not self.b.bus.listening)
        await self.a.chat.post("physics-101", self.ada, {"body": "while away"})
        await eventually(lambda: on_b.events[-1].last_seq == 2)
        await self.a.chat.post("physics-101", self.ada, {"body": "after"})
        await eventually(lambda: seqs(on_b) == [1, 3])

    async def test_owner_changes_cross(self) -> None:
        """Room changes, deleted messages and a deleted room made on A reach B's subscribers."""
        on_b = self.b.watch(self.room.id)
        await self.a.chat.post("physics-101", self.ada, {"body": "oops"})
        await self.a.chat.update_room("physics-101", self.owner, {"title": "Waves"})
        await self.a.chat.delete_message("physics-101", self.owner, 1)
        await self.a.chat.delete_room("physics-101", self.owner)
        await eventually(lambda: len(on_b.events) == 4)
        kinds = [json.loads(e.frame)["type"] for e in on_b.events]
        self.assertEqual(kinds, ["message", "room", "deleted", "error"])
        room_frame, deleted_frame = (json.loads(e.frame) for e in on_b.events[1:3])
        self.assertEqual((room_frame["room"]["title"], room_frame["room"]["online"]),
                         ("Waves", 1))
        self.assertEqual(deleted_frame, {"type": "deleted", "seq": 1})
        self.assertTrue(on_b.events[3].gone)

    async def test_malformed_notice(self) -> None:
        """A notice that is not tmd's is ignored (and logged); the Bus goes on."""
        on_b = self.b.watch(self.room.id)
        for payload in ("not json", "[]", '{"o": "x"}', '{"o": "x", "k": "m"}',
                        '{"o": "x", "k": "new"}', f'{{"o": "x", "k": "m", "r": {self.room.id}}}'):
            execute(self.url, "SELECT pg_notify(%s, %s)", self.a.store.channel, payload)
        await self.a.chat.post("physics-101", self.ada, {"body": "fine"})
        await eventually(lambda: seqs(on_b) == [1])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)  # the one for B's room
