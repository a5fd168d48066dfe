"""
Tests for the room tools (docs/room-tools.md): votes, the approval queue, pins and
statistics in both stores, and their rules in the chat core, with the Hub's clock.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from attrs import evolve
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.helpers import ImmediateReactor, in_thread_now, open_store, reject, resolve
from tests.postgres import fresh_schema
from tests.test_chat import START, Recorder
from tests.test_store import NOW, chat, new_room
from tmd.chat import Chat, start_point
from tmd.errors import (
    BadRequest,
    Forbidden,
    NotAQuestion,
    NotFound,
    QaOff,
    RateLimited,
    RestrictedWord,
    RoomLocked,
    RoomPaused,
    Unauthorized,
)
from tmd.hub import UPDATE_INTERVAL, Hub
from tmd.limits import Limits, Rate, RateLimiter
from tmd.model import ANYONE, Held, Message, NewMessage, Room, Viewer
from tmd.store.postgres import PostgresStore

if TYPE_CHECKING:
    _TestCase = TestCase
else:
    _TestCase = object


def held(room: Room, id: str, participant: str = "p1", body: str = "held") -> Held:
    return Held(id=id, room_id=room.id, room=room.name, participant_id=participant,
                author="ada", body=body, question=False, created_at=NOW, reason="moderation")


def approved(held: Held) -> NewMessage:
    return NewMessage(kind="chat", author=held.author, participant_id=held.participant_id,
                      body=held.body, created_at=NOW)


class RoomToolsStoreMixin(_TestCase):
    """What both engines do for votes, the queue, pins and statistics."""

    async def make_store(self) -> Any:
        raise NotImplementedError

    async def setUp(self) -> None:
        self.store = await self.make_store()
        self.room = await self.store.create_room(new_room(qa=True))
        for n in (1, 2, 3):
            await self.store.add_participant(self.room.id, f"p{n}", f"n{n}", b"%d" % n * 32, NOW)

    async def question(self, body: str = "why?") -> Message:
        return await self.store.post(self.room, NewMessage(
            kind="chat", author="n1", participant_id="p1", body=body, created_at=NOW,
            question=True))

    async def test_vote_once_per_participant(self) -> None:
        """Voting twice counts once; taking it back twice removes one; others add theirs."""
        q = await self.question()
        self.assertEqual(await self.store.vote(self.room, q.seq, "p1", True, NOW), 1)
        self.assertEqual(await self.store.vote(self.room, q.seq, "p1", True, NOW), 1)
        self.assertEqual(await self.store.vote(self.room, q.seq, "p2", True, NOW), 2)
        self.assertEqual(await self.store.vote(self.room, q.seq, "p1", False, NOW), 1)
        self.assertEqual(await self.store.vote(self.room, q.seq, "p1", False, NOW), 1)
        self.assertEqual(await self.store.voted(self.room, "p2"), [q.seq])
        self.assertEqual((await self.store.message(self.room.id, q.seq)).votes, 1)

    async def test_concurrent_votes(self) -> None:
        """Votes at the same moment each count: the count is the number of voters."""
        q = await self.question()
        await gatherResults([self.store.vote(self.room, q.seq, f"p{n}", True, NOW)
                             for n in (1, 2, 3)] * 3)
        self.assertEqual((await self.store.message(self.room.id, q.seq)).votes, 3)

    async def test_vote_needs_a_question(self) -> None:
        """No vote for a plain message, a deleted question or a seq of no message."""
        plain = await self.store.post(self.room, chat("plain"))
        q = await self.question()
        await self.store.delete_message(self.room, q.seq)
        for seq in (plain.seq, q.seq, 99):
            self.assertIsNone(await self.store.vote(self.room, seq, "p1", True, NOW))
        self.assertEqual(await self.store.voted(self.room, "p1"), [])

    async def test_questions_top_and_newest(self) -> None:
        """Top: most votes first, then oldest; newest: highest seq first."""
        *_, c = [await self.question(body) for body in "abc"]
        await self.store.post(self.room, chat("not a question"))
        await self.store.vote(self.room, c.seq, "p1", True, NOW)
        top, last_seq = await self.store.questions(self.room, True, 10)
        self.assertEqual(([m.body for m in top], last_seq), (["c", "a", "b"], 4))
        newest, _ = await self.store.questions(self.room, False, 2)
        self.assertEqual([m.body for m in newest], ["c", "b"])

    async def test_approve_takes_next_seq(self) -> None:
        """A held post has no seq; approved, it takes the room's next one, in its turn."""
        await self.store.post(self.room, chat("first"))
        h = held(self.room, "h1")
        await self.store.hold(h)
        await self.store.post(self.room, chat("second"))
        self.assertEqual(await self.store.held_posts(self.room, None), [h])
        message = await self.store.approve(self.room, "h1", approved(h))
        self.assertEqual((message.seq, message.body), (3, "held"))
        messages, last_seq = await self.store.messages(self.room, 0, 10)
        self.assertEqual(([m.seq for m in messages], last_seq), ([1, 2, 3], 3))
        self.assertEqual(await self.store.held_posts(self.room, None), [])
        self.assertIsNone(await self.store.approve(self.room, "h1", approved(h)))
        self.assertEqual((await self.store.room("physics-101")).last_seq, 3)

    async def test_concurrent_approvals_gap_free(self) -> None:
        """
        Many approvals and posts at once, each held post approved twice at once: every
        held post is published once and the seqs are 1..N without a gap.
        """
        posts = [held(self.room, f"h{n}", body=f"held {n}") for n in range(12)]
        for h in posts:
            await self.store.hold(h)
        work = [self.store.approve(self.room, h.id, approved(h)) for h in posts * 2]
        work += [self.store.post(self.room, chat(f"post {n}")) for n in range(6)]
        results = await gatherResults(work)
        published = [r for r in results if r is not None]
        self.assertEqual(sorted(m.seq for m in published), list(range(1, 19)))
        messages, last_seq = await self.store.messages(self.room, 0, 100)
        self.assertEqual(([m.seq for m in messages], last_seq), (list(range(1, 19)), 18))
        self.assertEqual(sorted(m.body for m in messages if m.body.startswith("held")),
                         sorted(h.body for h in posts))

    async def test_reject_leaves_no_trace(self) -> None:
        """A rejected post is gone, no seq used; rejecting again finds nothing."""
        h = held(self.room, "h1", participant="p2")
        await self.store.hold(h)
        self.assertEqual(await self.store.held_posts(self.room, "p1"), [])
        self.assertEqual(await self.store.held_posts(self.room, "p2"), [h])
        self.assertEqual(await self.store.held_post(self.room, "h1"), h)
        self.assertEqual(await self.store.reject(self.room, "h1"), h)
        self.assertIsNone(await self.store.reject(self.room, "h1"))
        self.assertEqual(await self.store.messages(self.room, 0, 10), ([], 0))

    async def test_pin(self) -> None:
        """One message is pinned at a time; pinning says which was before; deleting unpins."""
        one, two = await self.question(), await self.store.post(self.room, chat("two"))
        room, before = await self.store.pin(self.room, one.seq)
        self.assertEqual((room.pinned, before), (one.seq, None))
        room, before = await self.store.pin(self.room, two.seq)
        self.assertEqual((room.pinned, before), (two.seq, one.seq))
        messages, _ = await self.store.messages(self.room, 0, 10)
        self.assertEqual([m.pinned for m in messages], [False, True])
        await self.store.delete_message(self.room, two.seq)
        self.assertIsNone((await self.store.room("physics-101")).pinned)

    async def test_answered(self) -> None:
        """Only a question is marked answered."""
        q, plain = await self.question(), await self.store.post(self.room, chat("plain"))
        self.assertTrue(await self.store.set_answered(self.room, q.seq, True))
        self.assertFalse(await self.store.set_answered(self.room, plain.seq, True))
        self.assertTrue((await self.store.announce_change(self.room, q.seq)).answered)

    async def test_stats(self) -> None:
        """Per participant and in total; deleted messages do not count; the peak only rises."""
        q = await self.question()
        await self.store.post(self.room, chat("hi", author="n2"))
        gone = await self.store.post(self.room, NewMessage(
            kind="chat", author="n2", participant_id="p2", body="x", created_at=NOW))
        await self.store.delete_message(self.room, gone.seq)
        await self.store.post(self.room, NewMessage(
            kind="chat", author="Host", participant_id=None, body="h", created_at=NOW,
            host=True))
        await self.store.vote(self.room, q.seq, "p2", True, NOW)
        await self.store.vote(self.room, q.seq, "p3", True, NOW)
        await self.store.hold(held(self.room, "h1"))
        await self.store.raise_peak(self.room.id, 7)
        await self.store.raise_peak(self.room.id, 3)
        stats = await self.store.stats(self.room)
        self.assertEqual([(p.id, p.messages, p.questions, p.votes) for p in stats.participants],
                         [("p1", 1, 1, 0), ("p2", 0, 0, 1), ("p3", 0, 0, 1)])
        self.assertEqual((stats.messages, stats.questions, stats.host_messages, stats.votes,
                          stats.held, stats.peak_online), (3, 1, 1, 2, 1, 7))

    async def test_settings_kept(self) -> None:
        """The new room settings are stored and read back."""
        room = await self.store.create_room(new_room("other", qa=True, moderation="pre",
                                                     host_name="Prof"))
        self.assertEqual((room.qa, room.moderation, room.locked, room.host_name),
                         (True, "pre", False, "Prof"))


class SQLiteRoomToolsTests(RoomToolsStoreMixin, TestCase):
    async def make_store(self) -> Any:
        return open_store(self)


class PostgresRoomToolsTests(RoomToolsStoreMixin, TestCase):
    async def make_store(self) -> Any:
        store = PostgresStore(fresh_schema(self), reactor, 4)
        await store.open()
        self.addCleanup(store.close)
        return store


class ChatRoomToolsTests(SynchronousTestCase):
    """The rules, on SQLite, with the Hub's throttle on a clock the test moves."""

    def setUp(self) -> None:
        self.clock = ImmediateReactor()
        self.clock.advance(START)
        self.store = open_store(self, reactor=self.clock)
        self.hub_clock = Clock()
        self.hub = Hub(self.hub_clock)
        self.chat = Chat(self.store, self.hub, self.clock, in_thread_now)
        self.room, self.owner = resolve(self, self.chat.create_room(
            {"name": "physics-101", "qa": True}))
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        for nickname in ("ada", "bob"):
            participant, self.tokens[nickname] = resolve(
                self, self.chat.join(self.room, {"nickname": nickname}))
            self.ids[nickname] = participant.id

    def post(self, who: str, body: str, **more: Any) -> Any:
        token = self.owner if who == "owner" else self.tokens[who]
        return resolve(self, self.chat.post("physics-101", token, {"body": body, **more}))

    def patch(self, **request: Any) -> Room:
        return resolve(self, self.chat.update_room("physics-101", self.owner, request))

    def watch(self, viewer: Viewer = ANYONE) -> Recorder:
        watcher = Recorder()
        self.hub.subscribe(self.room.id, watcher, viewer)
        return watcher

    def frames(self, watcher: Recorder, kind: str) -> list[dict[str, Any]]:
        found = [json.loads(e.frame) for e in watcher.events if e.frame]
        return [f for f in found if f["type"] == kind]

    def test_vote_updates_throttled(self) -> None:
        """
        A burst of votes gives one C{updated} frame at once and one with the final count
        after the interval, however many votes came; a vote later goes out at once again.
        """
        q = self.post("ada", "why?", question=True)
        watcher = self.watch()
        for who in ("ada", "bob", "ada", "bob"):
            resolve(self, self.chat.vote("physics-101", self.tokens[who], q.seq, True))
        resolve(self, self.chat.vote("physics-101", self.tokens["bob"], q.seq, False))
        self.assertEqual([f["message"]["votes"] for f in self.frames(watcher, "updated")], [1])
        self.hub_clock.advance(UPDATE_INTERVAL)
        self.assertEqual([f["message"]["votes"] for f in self.frames(watcher, "updated")], [1, 1])
        self.hub_clock.advance(UPDATE_INTERVAL)
        resolve(self, self.chat.vote("physics-101", self.tokens["bob"], q.seq, True))
        self.assertEqual([f["message"]["votes"] for f in self.frames(watcher, "updated")],
                         [1, 1, 2])
        self.assertEqual(resolve(self, self.chat.voted("physics-101", self.tokens["bob"])),
                         [q.seq])

    def test_vote_refused(self) -> None:
        """Votes on what is no question, is gone, with no token or the owner's: each its error."""
        plain = self.post("ada", "plain")
        q = self.post("ada", "why?", question=True)
        vote = self.chat.vote
        reject(self, vote("physics-101", self.tokens["bob"], plain.seq, True), NotAQuestion)
        reject(self, vote("physics-101", self.tokens["bob"], 99, True), NotFound)
        reject(self, vote("physics-101", None, q.seq, True), Unauthorized)
        reject(self, vote("physics-101", self.owner, q.seq, True), Unauthorized)
        resolve(self, self.chat.delete_message("physics-101", self.owner, q.seq))
        reject(self, vote("physics-101", self.tokens["bob"], q.seq, True), NotFound)
        self.patch(qa=False)
        reject(self, vote("physics-101", self.tokens["bob"], plain.seq, True), QaOff)
        reject(self, self.chat.post("physics-101", self.tokens["ada"],
                                    {"body": "q", "question": True}), QaOff)
        self.patch(qa=True, state="paused")
        reject(self, vote("physics-101", self.tokens["bob"], plain.seq, True), RoomPaused)

    def test_votes_rate_limited(self) -> None:
        """A participant toggling a vote in a loop is held back (429); others vote on."""
        self.chat = Chat(self.store, self.hub, self.clock, in_thread_now,
                         limiter=RateLimiter(Limits(participant_votes=Rate(4, 10)), self.clock))
        q = self.post("ada", "why?", question=True)
        for on in (True, False, True, False):
            resolve(self, self.chat.vote("physics-101", self.tokens["bob"], q.seq, on))
        refused = reject(self, self.chat.vote("physics-101", self.tokens["bob"], q.seq, True),
                         RateLimited)
        self.assertEqual(refused.value.retry_after, 3)
        self.assertEqual(resolve(self, self.chat.vote("physics-101", self.tokens["ada"], q.seq,
                                                      True)), 1)
        self.clock.advance(2.5)
        self.assertEqual(resolve(self, self.chat.vote("physics-101", self.tokens["bob"], q.seq,
                                                      True)), 2)

    def test_vote_in_another_room(self) -> None:
        """A participant token of one room does not vote in another."""
        q = self.post("ada", "why?", question=True)
        other, _ = resolve(self, self.chat.create_room({"name": "other", "qa": True}))
        _, token = resolve(self, self.chat.join(other, {"nickname": "eve"}))
        reject(self, self.chat.vote("physics-101", token, q.seq, True), Unauthorized)

    def test_pre_moderation_flow(self) -> None:
        """
        In a C{pre} room a post is held: its author hears C{pending}, the owner C{held},
        others nothing; approved (edited), it gets the next seq and everyone the message.
        """
        everyone, ada, owner = (self.watch(), self.watch(Viewer(self.ids["ada"])),
                                self.watch(Viewer(owner=True)))
        self.post("bob", "before")
        self.patch(moderation="pre")
        held = self.post("ada", "held one")
        self.assertIsInstance(held, Held)
        self.assertEqual([f["held"]["id"] for f in self.frames(ada, "pending")], [held.id])
        self.assertEqual([f["held"]["id"] for f in self.frames(owner, "held")], [held.id])
        self.assertEqual(self.frames(everyone, "pending") + self.frames(everyone, "held"), [])
        self.assertEqual(self.frames(owner, "pending") + self.frames(ada, "held"), [])
        message = resolve(self, self.chat.approve("physics-101", self.owner, held.id,
                                                  {"body": "edited one"}))
        self.assertEqual((message.seq, message.body, message.edited, message.author),
                         (2, "edited one", True, "ada"))
        self.assertEqual([f["message"]["seq"] for f in self.frames(everyone, "message")], [1, 2])
        self.assertEqual(self.frames(ada, "released"), [
            {"type": "released", "id": held.id, "outcome": "approved", "seq": 2}])
        self.assertEqual(len(self.frames(owner, "released")), 1)
        self.assertEqual(self.frames(everyone, "released"), [])
        reject(self, self.chat.approve("physics-101", self.owner, held.id, {}), NotFound)

    def test_reject_and_owner_only(self) -> None:
        """Only the owner approves or rejects; a rejected post is gone for everyone."""
        self.patch(moderation="pre")
        held = self.post("ada", "held one")
        reject(self, self.chat.approve("physics-101", self.tokens["ada"], held.id, {}),
               Forbidden)
        reject(self, self.chat.approve("physics-101", None, held.id, {}), Unauthorized)
        reject(self, self.chat.reject("physics-101", self.tokens["bob"], held.id), Forbidden)
        self.assertEqual(resolve(self, self.chat.held_posts("physics-101", self.tokens["ada"])),
                         ([held], False))
        self.assertEqual(resolve(self, self.chat.held_posts("physics-101", self.tokens["bob"])),
                         ([], False))
        resolve(self, self.chat.reject("physics-101", self.owner, held.id))
        self.assertEqual(resolve(self, self.chat.held_posts("physics-101", self.owner)),
                         ([], True))
        self.assertEqual(resolve(self, self.chat.messages(self.room, 0, 10)), ([], 0))

    def test_restricted_words(self) -> None:
        """Matching posts are held with the words they matched, or refused; others pass."""
        resolve(self, self.chat.set_restricted("physics-101", self.owner,
                                               {"words": ["spoiler", "the answer"]}))
        self.assertIsInstance(self.post("ada", "no spoilers here"), Message)
        held = self.post("ada", "SPÓILER: the  Answer is 42")
        self.assertEqual((held.reason, held.matched), ("restricted", ("spoiler", "the answer")))
        resolve(self, self.chat.set_restricted("physics-101", self.owner, {"action": "refuse"}))
        reject(self, self.chat.post("physics-101", self.tokens["ada"], {"body": "a spoiler"}),
               RestrictedWord)
        host = self.post("owner", "a spoiler, from the host", host=True)
        self.assertTrue(host.host)
        restricted = resolve(self, self.chat.restricted("physics-101", self.owner))
        self.assertEqual((restricted.words, restricted.action), (("spoiler", "the answer"),
                                                                 "refuse"))
        for bad in ({"words": ["x" * 101]}, {"words": "spoiler"}, {"action": "delete"},
                    {"lists": ["klingon"]}, {"words": [f"w{i}" for i in range(501)]}):
            reject(self, self.chat.set_restricted("physics-101", self.owner, bad), BadRequest)
        reject(self, self.chat.set_restricted("physics-101", self.tokens["ada"], {}), Forbidden)

    def test_lock_and_host(self) -> None:
        """Locked: participants are refused, the host posts; C{host} needs the owner token."""
        self.patch(locked=True, host_name="Prof. Lee")
        reject(self, self.chat.post("physics-101", self.tokens["ada"], {"body": "hi"}),
               RoomLocked)
        message = self.post("owner", "listen", host=True)
        self.assertEqual((message.author, message.host, message.participant_id),
                         ("Prof. Lee", True, None))
        reject(self, self.chat.post("physics-101", self.tokens["ada"],
                                    {"body": "hi", "host": True}), Forbidden)
        reject(self, self.chat.post("physics-101", self.owner, {"body": "hi"}), Unauthorized)
        self.patch(locked=False, state="paused")
        self.assertTrue(self.post("owner", "still here", host=True).host)

    def test_answered_and_pinned(self) -> None:
        """The owner marks a question answered and pins it; everyone hears; room says which."""
        q = self.post("ada", "why?", question=True)
        plain = self.post("bob", "hmm")
        watcher = self.watch()
        update = self.chat.update_message
        marked = resolve(self, update("physics-101", self.owner, q.seq, {"answered": True}))
        self.assertTrue(marked.answered)
        reject(self, update("physics-101", self.owner, plain.seq, {"answered": True}),
               NotAQuestion)
        reject(self, update("physics-101", self.tokens["ada"], q.seq, {"pinned": True}),
               Forbidden)
        reject(self, update("physics-101", self.owner, q.seq, {}), BadRequest)
        self.hub_clock.advance(UPDATE_INTERVAL)
        self.assertTrue(resolve(self, update("physics-101", self.owner, q.seq,
                                             {"pinned": True})).pinned)
        resolve(self, update("physics-101", self.owner, plain.seq, {"pinned": True}))
        self.assertEqual(resolve(self, self.chat.room("physics-101")).pinned, plain.seq)
        self.hub_clock.advance(UPDATE_INTERVAL)
        updated = {(f["message"]["seq"], f["message"]["pinned"])
                   for f in self.frames(watcher, "updated")}
        self.assertIn((q.seq, False), updated)
        self.assertIn((plain.seq, True), updated)
        self.assertEqual([f["room"]["pinned"] for f in self.frames(watcher, "room")],
                         [q.seq, plain.seq])

    def test_peak_online(self) -> None:
        """The most online at once is kept with the room and shown in the statistics."""
        watchers = [self.watch() for _ in range(3)]
        self.hub_clock.advance(1)
        for watcher in watchers[1:]:
            self.hub.unsubscribe(self.room.id, watcher)
        self.hub_clock.advance(1)
        stats = resolve(self, self.chat.stats("physics-101", self.owner))
        self.assertEqual(stats.peak_online, 3)
        reject(self, self.chat.stats("physics-101", self.tokens["ada"]), Forbidden)

    def test_start_point(self) -> None:
        """A resume for a room of another id, or past its last seq, starts over."""
        room = evolve(self.room, last_seq=150)
        self.assertEqual(start_point(room, None, None, 100), (50, False))
        self.assertEqual(start_point(room, 120, str(room.id), 100), (120, False))
        self.assertEqual(start_point(room, 120, None, 100), (120, False))
        self.assertEqual(start_point(room, 120, "other", 100), (50, True))
        self.assertEqual(start_point(room, 151, None, 100), (50, True))
