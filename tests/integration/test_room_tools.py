"""
End to end: the approval queue and question votes through a real C{twistd -n tmd},
real HTTP and real websocket clients (a participant, a bystander and the owner).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.clients import Frames, Http, LiveClient, connect, count
from tests.integration.daemon import CLEAN_STOP, Daemon
from tests.integration.test_postgres import two_daemons
from tests.postgres import fresh_schema

ROOM = "/api/v1/rooms/tools-e2e"


def of(kind: str, frames: Frames) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == kind]


class RoomToolsDaemonTests(TestCase):
    timeout = 120

    def test_approval_and_votes(self) -> Deferred[None]:
        """
        In a C{pre} room with questions on: ada's post is pending for her and queued for
        the owner, unseen by bob; approved, it reaches all with the next seq, gap-free.
        A rejected post leaves no trace. Votes on ada's question reach bob as C{updated}.
        """
        return Deferred.fromCoroutine(self._approval_and_votes())

    async def _approval_and_votes(self) -> None:
        daemon = await Daemon.start(self)
        http = Http(daemon.url)
        code, created = await http.call("POST", "/api/v1/rooms", {
            "name": "tools-e2e", "qa": True, "moderation": "pre"})
        self.assertEqual((code, created["room"]["moderation"]), (201, "pre"))
        owner_token, room_id = created["owner_token"], created["room"]["id"]
        tokens = {}
        for nickname in ("ada", "bob"):
            _, joined = await http.call("POST", f"{ROOM}/join", {"nickname": nickname})
            tokens[nickname] = joined["token"]

        owner = await self.live(daemon, f"?token={owner_token}")
        ada = await self.live(daemon, f"?token={tokens['ada']}")
        bob = await self.live(daemon, f"?token={tokens['bob']}")
        self.assertEqual([of("welcome", c.frames)[0]["owner"] for c in (owner, ada, bob)],
                         [True, False, False])

        # A post over the websocket and one over HTTP are held, not published.
        ada.post("first, held", ref="r1")
        code, answer = await http.call("POST", f"{ROOM}/messages",
                                       {"body": "second, held", "question": True},
                                       tokens["ada"])
        self.assertEqual(code, 202)
        second = answer["held"]["id"]
        await ada.wait_for(count("pending", 2))
        [ack] = of("ack", await ada.wait_for(count("ack", 1)))
        first = ack["held"]
        self.assertEqual((ack["ref"], ack["seq"]), ("r1", None))
        queued = of("held", await owner.wait_for(count("held", 2)))
        self.assertEqual({f["held"]["id"] for f in queued}, {first, second})
        code, queue = await http.call("GET", f"{ROOM}/held", token=owner_token)
        self.assertEqual([h["id"] for h in queue["held"]], [first, second])
        code, _ = await http.call("POST", f"{ROOM}/held/{first}/approve", token=tokens["bob"])
        self.assertEqual(code, 403)

        # The host posts past the queue; the owner rejects one post and approves the other.
        code, hosted = await http.call("POST", f"{ROOM}/messages",
                                       {"body": "welcome all", "host": True}, owner_token)
        self.assertEqual((code, hosted["seq"], hosted["host"]), (201, 1, True))
        code, _ = await http.call("DELETE", f"{ROOM}/held/{first}", token=owner_token)
        self.assertEqual(code, 204)
        code, approved = await http.call("POST", f"{ROOM}/held/{second}/approve",
                                         token=owner_token)
        self.assertEqual((code, approved["seq"], approved["question"]), (201, 2, True))
        for client in (owner, ada, bob):
            await client.wait_for(count("message", 2))
            self.assertEqual([(m["seq"], m["body"]) for m in client.messages()],
                             [(1, "welcome all"), (2, "second, held")])
        released = of("released", await ada.wait_for(count("released", 2)))
        self.assertEqual([(f["id"], f["outcome"], f["seq"]) for f in released],
                         [(first, "rejected", None), (second, "approved", 2)])
        await owner.wait_for(count("released", 2))
        self.assertEqual(of("pending", bob.frames) + of("held", bob.frames)
                         + of("released", bob.frames), [])

        # Votes: idempotent, counted per participant, and bob's socket hears the count.
        for voter in ("bob", "bob", "ada"):
            code, vote = await http.call("PUT", f"{ROOM}/messages/2/vote", token=tokens[voter])
            self.assertEqual(code, 200)
        self.assertEqual(vote, {"seq": 2, "votes": 2, "voted": True})
        await bob.wait_for(lambda frames: any(
            f["type"] == "updated" and f["message"]["votes"] == 2 for f in frames))
        code, error = await http.call("PUT", f"{ROOM}/messages/1/vote", token=tokens["bob"])
        self.assertEqual((code, error["error"]["code"]), (400, "not_a_question"))
        code, top = await http.call("GET", f"{ROOM}/questions?order=top")
        self.assertEqual([(q["seq"], q["votes"]) for q in top["questions"]], [(2, 2)])
        code, stats = await http.call("GET", f"{ROOM}/stats", token=owner_token)
        self.assertEqual((stats["messages"], stats["questions"], stats["votes"],
                          stats["peak_online"]), (2, 1, 2, 3))

        # A resume after the name was reused by a new room starts over.
        resumed = await self.live(daemon, f"?since=2&room_id={room_id}")
        self.assertFalse(of("welcome", resumed.frames)[0]["new_room"])
        stranger = await self.live(daemon, "?since=2&room_id=not-this-one")
        await stranger.wait_for(count("message", 2))
        self.assertTrue(of("welcome", stranger.frames)[0]["new_room"])

        self.assertEqual(await daemon.stop(), CLEAN_STOP)
        self.assertNotIn("Traceback", daemon.output)
        self.assertNotIn(owner_token, daemon.output)

    async def live(self, daemon: Daemon, query: str) -> LiveClient:
        """A websocket client of the room, past its welcome."""
        client = await connect(daemon.port, f"{ROOM}/live{query}")
        await client.wait_for(count("welcome", 1))
        return client


class RoomToolsTwoDaemonsTests(TestCase):
    """The queue's frames and vote updates cross between daemons sharing PostgreSQL."""

    timeout = 120

    async def test_across_daemons(self) -> None:
        """
        Ada posts on daemon A, the owner watches on daemon B: the owner hears it queued,
        approves it on B, and ada hears it released on A; bob votes on B, and a client
        on A hears the count.
        """
        a, b = await two_daemons(self, fresh_schema(self))
        http_a, http_b = Http(a.url), Http(b.url)
        code, created = await http_a.call("POST", "/api/v1/rooms", {
            "name": "tools-e2e", "qa": True, "moderation": "pre"})
        owner_token = created["owner_token"]
        tokens = {}
        for nickname in ("ada", "bob"):
            _, joined = await http_a.call("POST", f"{ROOM}/join", {"nickname": nickname})
            tokens[nickname] = joined["token"]
        owner = await connect(b.port, f"{ROOM}/live?token={owner_token}")
        ada = await connect(a.port, f"{ROOM}/live?token={tokens['ada']}")
        watcher = await connect(a.port, f"{ROOM}/live")
        for client in (owner, ada, watcher):
            await client.wait_for(count("welcome", 1))

        code, answer = await http_a.call("POST", f"{ROOM}/messages",
                                         {"body": "is it?", "question": True}, tokens["ada"])
        self.assertEqual(code, 202)
        held_id = answer["held"]["id"]
        queued = of("held", await owner.wait_for(count("held", 1)))
        self.assertEqual(queued[0]["held"]["id"], held_id)
        code, approved = await http_b.call("POST", f"{ROOM}/held/{held_id}/approve",
                                           token=owner_token)
        self.assertEqual((code, approved["seq"]), (201, 1))
        released = of("released", await ada.wait_for(count("released", 1)))
        self.assertEqual((released[0]["id"], released[0]["seq"]), (held_id, 1))
        await watcher.wait_for(count("message", 1))

        code, _ = await http_b.call("PUT", f"{ROOM}/messages/1/vote", token=tokens["bob"])
        self.assertEqual(code, 200)
        await watcher.wait_for(lambda frames: any(
            f["type"] == "updated" and f["message"]["votes"] == 1 for f in frames))
        self.assertEqual(of("held", watcher.frames) + of("released", watcher.frames), [])
        for client in (owner, ada, watcher):
            client.sendClose()
            await client.closed
        for daemon in (a, b):
            self.assertEqual(await daemon.stop(), CLEAN_STOP)
            self.assertNotIn("Traceback", daemon.output)
