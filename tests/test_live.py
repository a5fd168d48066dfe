"""The websocket live endpoint with real websocket clients: order, resume, posting, errors."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from tests.clients import LiveClient, connect, count
from tests.server import Server
from tests.test_web import with_server
from tmd.hub import PRESENCE_INTERVAL
from tmd.model import Event, Message, NewMessage
from tmd.wire import message_frame

LIVE = "/api/v1/rooms/physics-101/live"


def seqs(client: LiveClient) -> list[int]:
    return [m["seq"] for m in client.messages()]


def errors(client: LiveClient) -> list[tuple[Any, str]]:
    return [(f["ref"], f["code"]) for f in client.frames if f["type"] == "error"]


async def post_many(server: Server, token: str, count: int) -> None:
    for i in range(count):
        await server.chat.post("physics-101", token, {"body": f"m{i + 1}"})


class BacklogTests(TestCase):
    @with_server
    async def test_welcome_and_last_100(self, server: Server) -> None:
        """Without C{since}: a welcome frame, then the last 100 messages in order."""
        tokens = await server.room_with("physics-101", "ada")
        await post_many(server, tokens["ada"], 105)
        client = await connect(server.port, LIVE)
        await client.wait_for(count("message", 100))
        welcome = client.frames[0]
        self.assertEqual((welcome["type"], welcome["you"], welcome["room"]["last_seq"],
                          welcome["room"]["online"]), ("welcome", None, 105, 1))
        self.assertEqual(seqs(client), list(range(6, 106)))

    @with_server
    async def test_since(self, server: Server) -> None:
        """With C{since=N}: exactly the messages after N, then live ones."""
        tokens = await server.room_with("physics-101", "ada")
        await post_many(server, tokens["ada"], 5)
        client = await connect(server.port, LIVE + f"?since=3&token={tokens['ada']}")
        await client.wait_for(count("message", 2))
        self.assertEqual(client.frames[0]["you"]["nickname"], "ada")
        await post_many(server, tokens["ada"], 1)
        await client.wait_for(count("message", 3))
        self.assertEqual(seqs(client), [4, 5, 6])

    @with_server
    async def test_more_than_a_page(self, server: Server) -> None:
        """A resume longer than one store page arrives whole and in order."""
        tokens = await server.room_with("physics-101", "ada")
        await post_many(server, tokens["ada"], 1205)
        client = await connect(server.port, LIVE + "?since=0")
        await client.wait_for(count("message", 1205))
        self.assertEqual(seqs(client), list(range(1, 1206)))


class LiveTests(TestCase):
    @with_server
    async def test_gap_and_duplicate(self, server: Server) -> None:
        """
        An event whose seq skips ahead makes the connection catch up from the store
        first; an event seen before is dropped: every seq once, in order.
        """
        tokens = await server.room_with("physics-101", "ada")
        client = await connect(server.port, LIVE)
        await client.wait_for(count("welcome", 1))
        room = await server.chat.room("physics-101")
        stored = [await server.store.post(room, NewMessage(
            kind="chat", author="ada", participant_id=None, body=f"quiet {i}", created_at=0))
            for i in range(2)]
        event = Event(room_id=room.id, frame=message_frame(stored[1]), message=stored[1])
        server.hub.publish(event)
        server.hub.publish(event)
        await post_many(server, tokens["ada"], 1)
        await client.wait_for(count("message", 3))
        self.assertEqual(seqs(client), [1, 2, 3])

    @with_server
    async def test_store_failure_closes_with_1011(self, server: Server) -> None:
        """If the store fails while a connection catches up, it closes with 1011 (reconnect)."""
        await server.room_with("physics-101")
        client = await connect(server.port, LIVE)
        await client.wait_for(count("welcome", 1))
        room = await server.chat.room("physics-101")
        await server.store.close()
        gap = Message(seq=5, room="physics-101", kind="chat", author="ada", body="x", created_at=0)
        server.hub.publish(Event(room_id=room.id, frame=message_frame(gap), message=gap))
        self.assertEqual(await client.closed, 1011)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @with_server
    async def test_fan_out_prepares_once(self, server: Server) -> None:
        """One post reaches every client of the room, framed once for all of them."""
        tokens = await server.room_with("physics-101", "ada")
        clients = [await connect(server.port, LIVE) for _ in range(3)]
        for client in clients:
            await client.wait_for(count("welcome", 1))
        live = server.web.live
        prepared = []
        original = live.prepareMessage
        live.prepareMessage = lambda payload, *a, **kw: prepared.append(payload) or original(
            payload, *a, **kw)
        await post_many(server, tokens["ada"], 1)
        for client in clients:
            await client.wait_for(count("message", 1))
            self.assertEqual(client.messages()[0]["body"], "m1")
        self.assertEqual(len(prepared), 1)

    @with_server
    async def test_presence(self, server: Server) -> None:
        """Who is online is announced, coalesced, as clients come and go."""
        await server.room_with("physics-101")
        first = await connect(server.port, LIVE)
        second = await connect(server.port, LIVE)
        await second.wait_for(count("welcome", 1))
        server.hub_clock.advance(PRESENCE_INTERVAL)
        await first.wait_for(count("presence", 1))
        self.assertEqual([f["online"] for f in first.frames if f["type"] == "presence"], [2])
        second.sendClose()
        await second.closed
        server.hub_clock.advance(PRESENCE_INTERVAL)
        await first.wait_for(count("presence", 2))
        self.assertEqual(first.frames[-1], {"type": "presence", "online": 1})

    @with_server
    async def test_shutdown_closes_with_1001(self, server: Server) -> None:
        """Stopping the web service closes live clients with 1001 (going away)."""
        await server.room_with("physics-101")
        client = await connect(server.port, LIVE)
        await client.wait_for(count("welcome", 1))
        await server.web.stopService()
        self.assertEqual(await client.closed, 1001)


class PostingTests(TestCase):
    @with_server
    async def test_post_and_ack(self, server: Server) -> None:
        """A post frame is answered by the message (to everyone) and then an ack."""
        tokens = await server.room_with("physics-101", "ada")
        ada = await connect(server.port, LIVE + f"?token={tokens['ada']}")
        other = await connect(server.port, LIVE)
        await other.wait_for(count("welcome", 1))
        ada.post("  hello  ", ref="r-1")
        await ada.wait_for(count("ack", 1))
        kinds = [f["type"] for f in ada.frames if f["type"] in ("message", "ack")]
        self.assertEqual(kinds, ["message", "ack"])
        self.assertEqual(ada.frames[-1], {"type": "ack", "ref": "r-1", "seq": 1})
        await other.wait_for(count("message", 1))
        self.assertEqual(other.messages()[0]["body"], "hello")

    @with_server
    async def test_bad_frames_keep_the_connection(self, server: Server) -> None:
        """Bad frames get an error frame with the right code; the connection stays up."""
        tokens = await server.room_with("physics-101", "ada", max_length=10)
        ada = await connect(server.port, LIVE + f"?token={tokens['ada']}")
        await ada.wait_for(count("welcome", 1))
        for raw in [b"{nope", b"[1, 2]", b'{"type": "dance"}', b'"post"',
                    json.dumps({"type": "post", "body": 5, "ref": "a"}).encode(),
                    json.dumps({"type": "post", "body": " ", "ref": "b"}).encode(),
                    json.dumps({"type": "post", "body": "x" * 11, "ref": "c"}).encode(),
                    json.dumps({"type": "post", "body": "x", "ref": {"no": 1}}).encode()]:
            ada.sendMessage(raw)
        ada.sendMessage(b"\x00\x01", isBinary=True)
        await ada.wait_for(count("error", 9))
        self.assertEqual(sorted(errors(ada), key=str), sorted([
            (None, "bad_request"), (None, "bad_request"), (None, "bad_request"),
            (None, "bad_request"), ("a", "bad_request"), ("b", "empty"), ("c", "too_long"),
            (None, "bad_request"), (None, "bad_request")], key=str))
        ada.post("still here", ref="ok")
        await ada.wait_for(count("ack", 1))
        self.assertEqual(seqs(ada), [1])

    @with_server
    async def test_post_without_token(self, server: Server) -> None:
        """A reader without a token is told to join, with the frame's ref."""
        await server.room_with("physics-101")
        reader = await connect(server.port, LIVE)
        await reader.wait_for(count("welcome", 1))
        reader.post("hi", ref="x")
        await reader.wait_for(count("error", 1))
        self.assertEqual(errors(reader), [("x", "unauthorized")])

    @with_server
    async def test_oversized_frame(self, server: Server) -> None:
        """A frame over 64 KiB closes the connection with 1009."""
        tokens = await server.room_with("physics-101", "ada")
        ada = await connect(server.port, LIVE + f"?token={tokens['ada']}")
        await ada.wait_for(count("welcome", 1))
        ada.post("x" * 70_000, ref="big")
        self.assertEqual(await ada.closed, 1009)


class RefusalTests(TestCase):
    async def refused(self, server: Server, path: str) -> tuple[list[tuple[Any, str]], int | None]:
        client = await connect(server.port, path)
        code = await client.closed
        return errors(client), code

    @with_server
    async def test_refusals(self, server: Server) -> None:
        """Unknown rooms close with 4404; bad tokens, password rooms and bad since with 1008."""
        await server.room_with("physics-101", "ada")
        await server.room_with("secret-room", password="hunter2")
        for path, expected in [
            ("/api/v1/rooms/nope/live", ([(None, "not_found")], 4404)),
            (LIVE + "?token=wrong", ([(None, "unauthorized")], 1008)),
            ("/api/v1/rooms/secret-room/live", ([(None, "unauthorized")], 1008)),
            (LIVE + "?since=-1", ([(None, "bad_request")], 1008)),
            (LIVE + "?since=soon", ([(None, "bad_request")], 1008)),
        ]:
            self.assertEqual(await self.refused(server, path), expected, path)
