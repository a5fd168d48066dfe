"""
Losing PostgreSQL while serving: the web service in this process on a real port,
its database reached through a proxy (L{Outage}) that the test takes down, as
when the server stops, and brings back.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.clients import LiveClient, connect, count
from tests.postgres import Outage, fresh_schema
from tests.server import Server, start_server
from tmd.model import NewMessage
from tmd.store.postgres import PostgresStore

ROOM = "physics-101"
PROMPT = 1.0
"""Seconds within which a call must be answered while the database is away."""


class OutageTests(TestCase):
    async def setUp(self) -> None:
        self.direct = fresh_schema(self)
        self.outage = Outage(self.direct)
        await self.outage.up()
        self.addCleanup(self.outage.down)
        store = PostgresStore(self.outage.url, reactor, 2)
        await store.open()
        self.addCleanup(store.close)
        self.server: Server = await start_server(self, store)
        self.http = self.server.http
        self.tokens = await self.server.room_with(ROOM, "ada")

    async def post(self, body: str) -> tuple[int, Any, float]:
        """Post over HTTP as ada: the status, the body and how long the answer took."""
        started = reactor.seconds()  # type: ignore[attr-defined]
        status, answer = await self.http.call(
            "POST", f"/api/v1/rooms/{ROOM}/messages", {"body": body}, token=self.tokens["ada"])
        return status, answer, reactor.seconds() - started  # type: ignore[attr-defined]

    async def watch(self, since: int = 0) -> LiveClient:
        client = await connect(self.server.port,
                               f"/api/v1/rooms/{ROOM}/live?since={since}&token={self.tokens['ada']}")
        await client.wait_for(count("welcome", 1))
        return client

    async def posted_once_back(self, body: str) -> int:
        """Post until the database is back (the store reconnects by itself); the seq given."""
        deadline = reactor.seconds() + 15  # type: ignore[attr-defined]
        while True:
            status, answer, _ = await self.post(body)
            if status == 201:
                return int(answer["seq"])
            self.assertLess(reactor.seconds(), deadline, "the store did not reconnect")  # type: ignore[attr-defined]
            await deferLater(reactor, 0.05)  # type: ignore[arg-type]

    async def test_posts_503_clients_stay_nothing_lost(self) -> None:
        """
        While the database is away: posts and /healthz answer 503 at once, a websocket
        post gets an error frame, and the websocket stays open. When it is back, posting
        works again by itself, and the client gets every acknowledged message, including
        one that another daemon committed meanwhile; a client resuming with since gets them all.
        """
        client = await self.watch()
        self.assertEqual((await self.post("before"))[0], 201)
        await client.wait_for(count("message", 1))

        await self.outage.down()
        status, answer, took = await self.post("lost")
        self.assertEqual((status, answer["error"]["code"]), (503, "unavailable"))
        self.assertLess(took, PROMPT)
        self.assertEqual(self.http.last_headers.getRawHeaders("retry-after"), ["2"])
        status, health = await self.http.call("GET", "/healthz")
        self.assertEqual((status, health["status"]), (503, "unavailable"))
        client.post("over the socket", ref="r1")
        frames = await client.wait_for(count("error", 1))
        self.assertEqual([(f["code"], f["ref"]) for f in frames if f["type"] == "error"],
                         [("unavailable", "r1")])

        # Another daemon, still connected, posts meanwhile.
        other = PostgresStore(self.direct, reactor, 1)
        await other.open()
        self.addCleanup(other.close)
        room = await other.room(ROOM)
        assert room is not None
        await other.post(room, NewMessage(kind="chat", author="eve", participant_id=None,
                                          body="from elsewhere", created_at=0))

        await self.outage.up()
        seq = await self.posted_once_back("after")
        self.assertEqual(seq, 3)
        frames = await client.wait_for(count("message", 3))
        self.assertIsNone(client.close_code)
        self.assertEqual([m["body"] for m in client.messages()],
                         ["before", "from elsewhere", "after"])
        status, health = await self.http.call("GET", "/healthz")
        self.assertEqual(status, 200)

        resumed = await self.watch(since=1)
        await resumed.wait_for(count("message", 2))
        self.assertEqual([m["seq"] for m in resumed.messages()], [2, 3])

    async def test_socket_opened_while_away(self) -> None:
        """A websocket opened while the database is away is told so and closed with 1013."""
        await self.outage.down()
        client = await connect(self.server.port, f"/api/v1/rooms/{ROOM}/live")
        code = await client.closed
        self.assertEqual(code, 1013)
        self.assertEqual([f.get("code") for f in client.frames], ["unavailable"])
