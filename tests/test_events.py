"""The event stream (server-sent events) with a real HTTP client: frames, ids, resume, endings."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseDone
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.clients import EventStreamClient, count, open_events
from tests.helpers import eventually, in_thread_now, open_store
from tests.server import Server
from tests.test_live import post_many
from tests.test_web import with_server
from tmd.chat import Chat
from tmd.hub import PRESENCE_INTERVAL, Hub
from tmd.limits import DEFAULT_MAX_SEND_BUFFER as MAX_UNSENT
from tmd.model import Event
from tmd.relay import Relay
from tmd.web.app import WebApp
from tmd.web.events import KEEP_ALIVE, EventStreams
from tmd.wire import presence_frame

ROOM = "/api/v1/rooms/physics-101"
EVENTS = ROOM + "/events"


def seqs(client: EventStreamClient) -> list[int]:
    return [m["seq"] for m in client.messages()]


def message_ids(client: EventStreamClient) -> list[int | None]:
    return [i for i, f in zip(client.ids, client.frames, strict=True) if f["type"] == "message"]


class BacklogTests(TestCase):
    @with_server
    async def test_welcome_and_last_100(self, server: Server) -> None:
        """
        Without C{since}: the headers of a stream, a welcome (its id the seq the stream
        starts after), then the last 100 messages, each with its seq as id.
        """
        tokens = await server.room_with("physics-101", "ada")
        await post_many(server, tokens["ada"], 105)
        client = await open_events(self, server.port, EVENTS)
        headers = client.response.headers
        self.assertEqual(
            [headers.getRawHeaders(name) for name in
             ("content-type", "cache-control", "x-accel-buffering")],
            [["text/event-stream"], ["no-cache"], ["no"]])
        await client.wait_for(count("message", 100))
        welcome = client.frames[0]
        self.assertEqual((welcome["type"], welcome["you"], welcome["room"]["last_seq"],
                          welcome["room"]["online"], client.ids[0]),
                         ("welcome", None, 105, 1, 5))
        self.assertEqual(seqs(client), list(range(6, 106)))
        self.assertEqual(message_ids(client), list(range(6, 106)))

    @with_server
    async def test_live_messages(self, server: Server) -> None:
        """After the backlog, live messages arrive in order, with their ids; the token says who."""
        tokens = await server.room_with("physics-101", "ada")
        await post_many(server, tokens["ada"], 2)
        client = await open_events(self, server.port, EVENTS + f"?token={tokens['ada']}")
        await client.wait_for(count("message", 2))
        self.assertEqual(client.frames[0]["you"]["nickname"], "ada")
        status, _ = await server.http.call("POST", ROOM + "/messages", {"body": "live"},
                                           token=tokens["ada"])
        self.assertEqual(status, 201)
        await client.wait_for(count("message", 3))
        self.assertEqual((seqs(client), message_ids(client)), ([1, 2, 3], [1, 2, 3]))
        self.assertEqual(client.messages()[-1]["body"], "live")

    @with_server
    async def test_bearer_token(self, server: Server) -> None:
        """A client that can send headers may send its token as C{Authorization}."""
        tokens = await server.room_with("physics-101", "ada", password="secret")
        client = await open_events(self, server.port, EVENTS, {
            "Authorization": [f"Bearer {tokens['ada']}"]})
        await client.wait_for(count("welcome", 1))
        self.assertEqual(client.frames[0]["you"]["nickname"], "ada")


class RoomToolsTests(TestCase):
    @with_server
    async def test_held_posts(self, server: Server) -> None:
        """
        In a pre-moderated room the author's stream hears C{pending}, the owner's C{held},
        others neither; approved, the post reaches every stream as a message.
        """
        tokens = await server.room_with("physics-101", "ada", moderation="pre")
        author, owner, anyone = [
            await open_events(self, server.port, EVENTS + query)
            for query in (f"?token={tokens['ada']}", f"?token={tokens['owner']}", "")]
        for client in (author, owner, anyone):
            await client.wait_for(count("welcome", 1))
        self.assertEqual([c.frames[0]["owner"] for c in (author, owner, anyone)],
                         [False, True, False])
        status, held = await server.http.call("POST", ROOM + "/messages", {"body": "held"},
                                              token=tokens["ada"])
        self.assertEqual(status, 202)
        await author.wait_for(count("pending", 1))
        await owner.wait_for(count("held", 1))
        status, _ = await server.http.call(
            "POST", ROOM + f"/held/{held['held']['id']}/approve", token=tokens["owner"])
        self.assertEqual(status, 201)
        for client in (author, owner, anyone):
            await client.wait_for(count("message", 1))
        self.assertEqual([f["type"] for f in anyone.frames[1:]], ["message"])
        self.assertEqual(author.messages()[0]["body"], "held")

    @with_server
    async def test_room_made_again(self, server: Server) -> None:
        """A stream resuming with another room's id starts over: C{new_room}, the last 100."""
        tokens = await server.room_with("physics-101", "ada")
        await post_many(server, tokens["ada"], 2)
        room = await server.chat.room("physics-101")
        same = await open_events(self, server.port, EVENTS + f"?since=1&room_id={room.id}")
        other = await open_events(self, server.port, EVENTS + "?since=1&room_id=elsewhere")
        await same.wait_for(count("message", 1))
        await other.wait_for(count("message", 2))
        self.assertEqual([(c.frames[0]["new_room"], seqs(c)) for c in (same, other)],
                         [(False, [2]), (True, [1, 2])])


class ResumeTests(TestCase):
    @with_server
    async def test_since(self, server: Server) -> None:
        """With C{?since=N}: exactly the messages after N, then live ones."""
        tokens = await server.room_with("physics-101", "ada")
        await post_many(server, tokens["ada"], 5)
        client = await open_events(self, server.port, EVENTS + "?since=3")
        await client.wait_for(count("message", 2))
        self.assertEqual(client.ids[0], 3)
        await post_many(server, tokens["ada"], 1)
        await client.wait_for(count("message", 3))
        self.assertEqual(seqs(client), [4, 5, 6])

    @with_server
    async def test_last_event_id(self, server: Server) -> None:
        """
        A client that hangs up and comes back with C{Last-Event-ID} (and the URL it
        first used, as C{EventSource} does) gets what it missed, nothing twice.
        """
        tokens = await server.room_with("physics-101", "ada")
        await post_many(server, tokens["ada"], 3)
        first = await open_events(self, server.port, EVENTS + "?since=1")
        await first.wait_for(count("message", 2))
        await first.hang_up()
        await post_many(server, tokens["ada"], 2)
        again = await open_events(self, server.port, EVENTS + "?since=1", {
            "Last-Event-ID": [str(first.ids[-1])]})
        await again.wait_for(count("message", 2))
        await post_many(server, tokens["ada"], 1)
        await again.wait_for(count("message", 3))
        self.assertEqual(seqs(first) + seqs(again), [2, 3, 4, 5, 6])

    @with_server
    async def test_resume_from_welcome(self, server: Server) -> None:
        """
        The welcome's id keeps the stream's starting point: a client that saw no message
        before it left still gets, on its return, every message posted meanwhile.
        """
        tokens = await server.room_with("physics-101", "ada")
        first = await open_events(self, server.port, EVENTS)
        await first.wait_for(count("welcome", 1))
        await first.hang_up()
        await post_many(server, tokens["ada"], 105)
        again = await open_events(self, server.port, EVENTS, {
            "Last-Event-ID": [str(first.ids[0])]})
        await again.wait_for(count("message", 105))
        self.assertEqual(seqs(again), list(range(1, 106)))

    @with_server
    async def test_more_than_a_page(self, server: Server) -> None:
        """A resume longer than one store page arrives whole and in order."""
        tokens = await server.room_with("physics-101", "ada")
        await post_many(server, tokens["ada"], 1205)
        client = await open_events(self, server.port, EVENTS + "?since=0")
        await client.wait_for(count("message", 1205))
        self.assertEqual(seqs(client), list(range(1, 1206)))


class FrameTests(TestCase):
    @with_server
    async def test_deleted_room_and_presence(self, server: Server) -> None:
        """Deleted, room and presence frames arrive as events without ids."""
        tokens = await server.room_with("physics-101", "ada")
        await post_many(server, tokens["ada"], 2)
        client = await open_events(self, server.port, EVENTS)
        await client.wait_for(count("message", 2))
        owner = tokens["owner"]
        self.assertEqual((await server.http.call("DELETE", ROOM + "/messages/1", token=owner))[0],
                         204)
        await client.wait_for(count("deleted", 1))
        status, _ = await server.http.call("PATCH", ROOM, {"state": "paused"}, token=owner)
        self.assertEqual(status, 200)
        await client.wait_for(count("room", 1))
        server.hub_clock.advance(PRESENCE_INTERVAL)
        await client.wait_for(count("presence", 1))
        later = [(i, f) for i, f in zip(client.ids, client.frames, strict=True)][3:]
        self.assertEqual([(i, f["type"]) for i, f in later],
                         [(None, "deleted"), (None, "room"), (None, "presence")])
        self.assertEqual((later[0][1]["seq"], later[1][1]["room"]["state"],
                          later[2][1]["online"]), (1, "paused", 1))

    @with_server
    async def test_room_deleted(self, server: Server) -> None:
        """Deleting the room sends its last frame and ends the stream; no one is left following."""
        tokens = await server.room_with("physics-101")
        room = await server.chat.room("physics-101")
        client = await open_events(self, server.port, EVENTS)
        await client.wait_for(count("welcome", 1))
        self.assertEqual(server.hub.local_online(room.id), 1)
        self.assertEqual((await server.http.call("DELETE", ROOM, token=tokens["owner"]))[0], 204)
        await client.ended
        assert client.end_reason is not None
        self.assertTrue(client.end_reason.check(ResponseDone))  # finished, not dropped
        self.assertEqual({k: v for k, v in client.frames[-1].items() if k != "message"},
                         {"type": "error", "ref": None, "code": "not_found"})
        self.assertEqual((server.hub.local_online(room.id), server.web.events.streams),
                         (0, set()))

    @with_server
    async def test_shutdown_ends_streams(self, server: Server) -> None:
        """Stopping the web service ends every stream (clients reconnect elsewhere or later)."""
        await server.room_with("physics-101")
        client = await open_events(self, server.port, EVENTS)
        await client.wait_for(count("welcome", 1))
        await server.web.stopService()
        await client.ended
        self.assertEqual(server.web.events.streams, set())


class RefusalTests(TestCase):
    @with_server
    async def test_errors_before_streaming(self, server: Server) -> None:
        """A missing room, a wrong or missing token and a bad resume point are JSON errors."""
        tokens = await server.room_with("physics-101", "ada", password="secret")
        http = server.http
        for path, headers, status, code in [
            ("/api/v1/rooms/nowhere/events", {}, 404, "not_found"),
            (EVENTS, {}, 401, "unauthorized"),
            (EVENTS + "?token=wrong", {}, 401, "unauthorized"),
            (EVENTS + f"?token={tokens['ada']}&since=-1", {}, 400, "bad_request"),
            (EVENTS + f"?token={tokens['ada']}", {"Last-Event-ID": ["x"]}, 400, "bad_request"),
        ]:
            answer = await http.call("GET", path, headers=headers)
            self.assertEqual((answer[0], answer[1]["error"]["code"]), (status, code), path)
            self.assertEqual(http.last_headers.getRawHeaders("content-type"),
                             ["application/json; charset=utf-8"])
        self.assertEqual(server.web.events.streams, set())


class ConnectionTests(TestCase):
    @with_server
    async def test_keep_alive(self, server: Server) -> None:
        """A comment every 20 s of the clock keeps proxies from cutting a quiet stream."""
        await server.room_with("physics-101")
        client = await open_events(self, server.port, EVENTS)
        await client.wait_for(count("welcome", 1))
        server.hub_clock.advance(KEEP_ALIVE - 1)
        server.hub_clock.advance(1)
        await client.until(lambda: len(client.comments) == 1)
        server.hub_clock.advance(KEEP_ALIVE)
        await client.until(lambda: len(client.comments) == 2)
        self.assertEqual(client.comments, [b"keep-alive", b"keep-alive"])

    @with_server
    async def test_hang_up_unsubscribes(self, server: Server) -> None:
        """A client that hangs up is no longer followed, counted online or kept alive."""
        await server.room_with("physics-101")
        room = await server.chat.room("physics-101")
        client = await open_events(self, server.port, EVENTS)
        await client.wait_for(count("welcome", 1))
        self.assertEqual(server.hub.local_online(room.id), 1)
        await client.hang_up()
        await eventually(lambda: server.hub.local_online(room.id) == 0)
        self.assertEqual(server.web.events.streams, set())
        server.hub_clock.advance(PRESENCE_INTERVAL)  # what is left to say: one left
        self.assertEqual(server.hub_clock.getDelayedCalls(), [])  # no keep-alive either


class BackPressureTests(SynchronousTestCase):
    """A client that stops reading is cut off (here: on a string transport)."""

    def setUp(self) -> None:
        self.store = store = open_store(self)
        self.hub = Hub(Clock())
        chat = Chat(store, self.hub, Clock(), in_thread_now)
        self.room, _ = self.successResultOf(chat.create_room({"name": "physics-101"}))
        self.cut_off: list[None] = []
        self.events = EventStreams(chat, self.hub, Clock(), lambda: self.cut_off.append(None))
        site = Site(WebApp(chat, store, Resource(), Path(), Relay(store, Clock()),
                           events=self.events).app.resource())
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 80))
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(f"GET {EVENTS} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.assertIn(b'"type":"welcome"', self.transport.value())

    def publish(self, size: int) -> None:
        """A frame of about C{size} bytes, to everyone in the room."""
        self.hub.publish(Event(room_id=self.room.id, frame=presence_frame(0) + b" " * size))

    def test_cut_off(self) -> None:
        """Past the limit of unread bytes, the connection is dropped and the room left."""
        channel = self.transport.producer
        assert channel is not None
        channel.pauseProducing()  # as the transport does when its buffer is full
        self.publish(MAX_UNSENT // 2)
        self.assertFalse(self.transport.disconnected)
        self.publish(MAX_UNSENT // 2)
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(len(self.cut_off), 1)  # counted as a slow consumer
        written = len(self.transport.value())
        self.publish(10)
        self.assertEqual(len(self.transport.value()), written)
        self.channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((self.hub.local_online(self.room.id), self.events.streams), (0, set()))

    def test_reading_again(self) -> None:
        """A client that catches up on its reading starts afresh: it is not cut off."""
        channel = self.transport.producer
        assert channel is not None
        for _ in range(3):
            channel.pauseProducing()
            self.publish(MAX_UNSENT // 2)
            channel.resumeProducing()
        self.assertFalse(self.transport.disconnected)
        self.assertEqual(self.hub.local_online(self.room.id), 1)

    def test_catch_up_at_the_clients_pace(self) -> None:
        """
        A catch-up is not cut off, however long: it writes nothing while the client's
        buffer is full, and goes on as the buffer drains.
        """
        elsewhere = Chat(self.store, Hub(Clock()), Clock(), in_thread_now)  # not our Hub
        _, token = self.successResultOf(elsewhere.join(self.room, {"nickname": "ada"}))
        for _ in range(20):
            self.successResultOf(elsewhere.post("physics-101", token, {"body": "x" * 200}))
        channel = self.transport.producer
        assert channel is not None
        channel.pauseProducing()
        written = len(self.transport.value())
        self.hub.publish(Event(room_id=self.room.id, frame=b"", last_seq=20))  # "catch up"
        self.assertEqual(len(self.transport.value()), written)
        channel.resumeProducing()
        self.assertEqual(self.transport.value().count(b'"type":"message"'), 20)
        self.assertEqual((self.transport.disconnected, self.cut_off), (False, []))
