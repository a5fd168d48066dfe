"""
Tests for the store: the L{IStore} contract, and what is particular to each engine.

L{StoreContractMixin} holds what every engine must do; an engine's test case
mixes it in and says how to make a store (and how to delete a room behind the
store's back). L{SQLiteStoreTests} runs it on SQLite, L{PostgresStoreTests} on
the real PostgreSQL named by C{TMD_TEST_POSTGRES}.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING, Any

from attrs import evolve
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.helpers import (
    ImmediatePool,
    ImmediateReactor,
    database_path,
    eventually,
    open_store,
    resolve,
)
from tests.postgres import execute, fresh_schema, terminate
from tmd.errors import NameTaken, NotFound, Unavailable
from tmd.model import (
    SEQ_PLACEHOLDER,
    Delivery,
    NewMessage,
    NewRoom,
    Restricted,
    Room,
    RoomChanges,
)
from tmd.store import IStore, postgres
from tmd.store.migrations import migrations
from tmd.store.postgres import PostgresStore
from tmd.store.sqlite import SQLiteStore

NOW = 1_764_000_000_000


def new_room(name: str = "physics-101", **changes: Any) -> NewRoom:
    fields: dict[str, Any] = {
        "name": name, "title": "Physics 101", "created_at": NOW, "expires_at": NOW + 86_400_000,
        "max_length": 280, "hashtags": ("#phys101",), "password_hash": None,
        "owner_token_hash": hashlib.sha256(name.encode()).digest(),
    }
    fields.update(changes)
    return NewRoom(**fields)


def chat(body: str, author: str = "ada", created_at: int = NOW) -> NewMessage:
    return NewMessage(kind="chat", author=author, participant_id="p-" + author, body=body,
                      created_at=created_at)


def delivery(id: str = "e1", destination: str = "webhook https://hooks.example.org/a",
             body: bytes = b'{"id":"e1","data":{"seq":null}}', **changes: Any) -> Delivery:
    fields: dict[str, Any] = {
        "id": id, "destination": destination, "created_at": NOW, "method": "POST", "path": "",
        "content_type": "application/json", "event": "message.created", "body": body,
    }
    fields.update(changes)
    return Delivery(**fields)


BROKEN = delivery("broken", method=None)
"""A delivery the outbox refuses (no method): the write it comes with must fail whole."""


if TYPE_CHECKING:
    _TestCase = TestCase
else:
    _TestCase = object


class StoreContractMixin(_TestCase):
    """What every L{IStore} engine does; mixed into a trial L{TestCase}."""

    async def make_store(self) -> Any:
        """An open store on an empty database, closed at the end of the test."""
        raise NotImplementedError

    def delete_room_behind_back(self, room: Room) -> None:
        """Delete C{room}'s row with another connection, as another process would."""
        raise NotImplementedError

    def stored_outbox(self) -> list[tuple[str, str, bool]]:
        """Every outbox row as C{(id, destination, dead)} in order, read with another connection."""
        raise NotImplementedError

    async def setUp(self) -> None:
        self.store = await self.make_store()

    async def create(self, name: str = "physics-101", **changes: Any) -> Room:
        return await self.store.create_room(new_room(name, **changes))

    async def post(self, room: Room, body: str, **kw: Any) -> Any:
        return await self.store.post(room, chat(body, **kw))

    async def test_provides_interface(self) -> None:
        """The store provides L{IStore}."""
        self.assertTrue(verifyObject(IStore, self.store))

    async def test_check(self) -> None:
        """C{check()} succeeds on an open store."""
        self.assertIsNone(await self.store.check())

    async def test_create_room(self) -> None:
        """C{create_room} returns the stored L{Room}: the fields given, open, no messages yet."""
        room = await self.create(password_hash="scrypt$x", hashtags=("#a", "#b"))
        self.assertIsInstance(room.id, int)
        self.assertEqual(
            (room.name, room.title, room.state, room.created_at, room.expires_at,
             room.max_length, room.password_hash, room.hashtags, room.last_seq),
            ("physics-101", "Physics 101", "open", NOW, NOW + 86_400_000, 280, "scrypt$x",
             ("#a", "#b"), 0))
        self.assertEqual(room.owner_token_hash, hashlib.sha256(b"physics-101").digest())

    async def test_room(self) -> None:
        """C{room(name)} reads back the room that was created."""
        created = await self.create()
        self.assertEqual(await self.store.room("physics-101"), created)

    async def test_room_unknown(self) -> None:
        """C{room(name)} gives None for a name no room has."""
        await self.create()
        self.assertIsNone(await self.store.room("chemistry"))

    async def test_name_taken(self) -> None:
        """A second room with a name already in use fails with L{NameTaken}."""
        await self.create()
        error = await self.assertFailure(self.store.create_room(new_room(title="Other")), NameTaken)
        self.assertIn("physics-101", str(error))

    async def test_room_id_not_reused(self) -> None:
        """A room re-created after its row was deleted gets a new id, even with the same name."""
        first = await self.create()
        self.delete_room_behind_back(first)
        second = await self.create()
        self.assertGreater(second.id, first.id)
        self.assertEqual(second.last_seq, 0)

    async def test_add_participant(self) -> None:
        """C{add_participant} returns the participant, not muted, and C{participant} finds it."""
        room = await self.create()
        added = await self.store.add_participant(room.id, "p1", "Ada", b"h" * 32, NOW)
        self.assertEqual((added.id, added.room_id, added.nickname, added.muted),
                      ("p1", room.id, "Ada", False))
        self.assertEqual(await self.store.participant(room.id, b"h" * 32), added)

    async def test_nickname_taken_ignoring_case(self) -> None:
        """A nickname differing only in case from one in the room fails with L{NameTaken}."""
        room = await self.create()
        await self.store.add_participant(room.id, "p1", "Ada", b"1" * 32, NOW)
        await self.assertFailure(
            self.store.add_participant(room.id, "p2", "aDA", b"2" * 32, NOW), NameTaken)
        self.assertIsNone(await self.store.participant(room.id, b"2" * 32))

    async def test_nickname_case_fold(self) -> None:
        """Nicknames compare case-folded: 'STRASSE' is taken once 'Straße' is."""
        room = await self.create()
        await self.store.add_participant(room.id, "p1", "Straße", b"1" * 32, NOW)
        taken = self.store.add_participant(room.id, "p2", "STRASSE", b"2" * 32, NOW)
        await self.assertFailure(taken, NameTaken)

    async def test_nickname_in_other_room(self) -> None:
        """The same nickname can be used in two different rooms."""
        one, two = await self.create("one"), await self.create("two")
        await self.store.add_participant(one.id, "p1", "ada", b"1" * 32, NOW)
        added = await self.store.add_participant(two.id, "p2", "ada", b"2" * 32, NOW)
        self.assertEqual((added.room_id, added.nickname), (two.id, "ada"))

    async def test_participant_other_room(self) -> None:
        """C{participant} finds a token only in the room it was issued for."""
        one, two = await self.create("one"), await self.create("two")
        await self.store.add_participant(one.id, "p1", "ada", b"1" * 32, NOW)
        self.assertIsNone(await self.store.participant(two.id, b"1" * 32))
        self.assertIsNone(await self.store.participant(one.id, b"9" * 32))

    async def test_room_with_participant(self) -> None:
        """
        C{room_with_participant} reads the room and the token's participant in it as it
        is now (muted too); None in place of one another room's token or no one holds.
        """
        room, other = await self.create(), await self.create("other")
        ada = await self.store.add_participant(room.id, "p1", "ada", b"1" * 32, NOW)
        await self.store.add_participant(other.id, "p2", "bob", b"2" * 32, NOW)
        self.assertEqual(await self.store.room_with_participant("physics-101", b"1" * 32),
                         (room, ada))
        await self.store.set_muted(room, "p1", True)
        found = await self.store.room_with_participant("physics-101", b"1" * 32)
        self.assertEqual(found, (room, evolve(ada, muted=True)))
        for token_hash in (b"2" * 32, b"9" * 32, room.owner_token_hash):
            self.assertEqual(await self.store.room_with_participant("physics-101", token_hash),
                             (room, None))
        self.assertIsNone(await self.store.room_with_participant("chemistry", b"1" * 32))

    async def test_room_with_participant_after_changes(self) -> None:
        """
        After each change to a room's settings or a participant, C{room_with_participant}
        answers with it, however often it was asked before (an engine may keep answers).
        """
        room = await self.create()
        await self.store.add_participant(room.id, "p1", "ada", b"1" * 32, NOW)
        posted = await self.post(room, "pin me")

        async def looked_up() -> tuple[Room, Any]:
            await self.store.room_with_participant("physics-101", b"1" * 32)  # kept, maybe
            found = await self.store.room_with_participant("physics-101", b"1" * 32)
            assert found is not None
            return found

        await self.store.set_muted(room, "p1", True)
        self.assertTrue((await looked_up())[1].muted)
        changed = RoomChanges(state="paused", title="T", hashtags=(), expires_at=NOW + 10,
                              qa=True, moderation="pre", locked=True, host_name="H")
        await self.store.update_room(room, changed)
        found = (await looked_up())[0]
        self.assertEqual((found.state, found.qa, found.moderation, found.locked),
                         ("paused", True, "pre", True))
        await self.store.set_restricted(room, Restricted(words=("bad",)))
        self.assertEqual((await looked_up())[0].restricted.words, ("bad",))
        await self.store.pin(room, posted.seq)
        self.assertEqual((await looked_up())[0].pinned, posted.seq)
        await self.store.delete_message(room, posted.seq)
        self.assertIsNone((await looked_up())[0].pinned)
        await self.store.close_expired(NOW + 10, 10)
        self.assertEqual((await looked_up())[0].state, "closed")
        await self.store.purge_expired(NOW + 10, 10)
        self.assertIsNone(await self.store.room_with_participant("physics-101", b"1" * 32))
        again = await self.create()
        await self.store.add_participant(again.id, "p2", "bob", b"2" * 32, NOW)
        await self.store.room_with_participant("physics-101", b"2" * 32)
        await self.store.delete_room(again)
        self.assertIsNone(await self.store.room_with_participant("physics-101", b"2" * 32))

    async def test_participants_and_mute(self) -> None:
        """C{participants} lists a room's people as they joined; C{set_muted} flips one."""
        room, other = await self.create(), await self.create("other")
        await self.store.add_participant(room.id, "p1", "ada", b"1" * 32, NOW)
        await self.store.add_participant(room.id, "p2", "bob", b"2" * 32, NOW + 1)
        await self.store.add_participant(other.id, "p3", "eve", b"3" * 32, NOW)
        self.assertTrue(await self.store.set_muted(room, "p2", True))
        listed = await self.store.participants(room)
        self.assertEqual([(p.id, p.nickname, p.muted) for p in listed],
                         [("p1", "ada", False), ("p2", "bob", True)])
        self.assertTrue((await self.store.participant(room.id, b"2" * 32)).muted)
        self.assertTrue(await self.store.set_muted(room, "p2", False))
        self.assertFalse((await self.store.participant(room.id, b"2" * 32)).muted)
        self.assertFalse(await self.store.set_muted(room, "p3", True))  # another room's
        self.assertFalse(await self.store.set_muted(room, "nobody", True))

    async def test_post_seq(self) -> None:
        """Posts get seq 1, 2, 3 in order, and the room's last_seq follows."""
        room = await self.create()
        messages = [await self.post(room, f"m{i}") for i in range(3)]
        self.assertEqual([m.seq for m in messages], [1, 2, 3])
        self.assertEqual((await self.store.room("physics-101")).last_seq, 3)

    async def test_post_message(self) -> None:
        """C{post} returns the committed message with the room's name and what was posted."""
        room = await self.create()
        message = await self.post(room, "Is light a wave?", author="ada", created_at=NOW + 5)
        self.assertEqual(
            (message.seq, message.room, message.kind, message.author, message.body,
             message.created_at, message.source, message.participant_id),
            (1, "physics-101", "chat", "ada", "Is light a wave?", NOW + 5, None, "p-ada"))
        [stored], _ = await self.store.messages(room, 0, 10)
        self.assertEqual(stored, message)

    async def test_post_seq_per_room(self) -> None:
        """Each room counts its own seq: posts in one room leave no gaps in the other."""
        one, two = await self.create("one"), await self.create("two")
        seqs = [(await self.post(room, body)).seq
                for room, body in [(one, "a"), (two, "b"), (one, "c"), (two, "d"), (two, "e")]]
        self.assertEqual(seqs, [1, 1, 2, 2, 3])

    async def test_failed_post_uses_no_seq(self) -> None:
        """A post that fails inside its transaction uses up no seq: the next one fills it."""
        room = await self.create()
        await self.post(room, "first")
        await self.assertFailure(self.store.post(room, NewMessage(
            kind="no-such-kind", author="ada", participant_id=None, body="x", created_at=NOW)),
            Exception)
        self.assertEqual((await self.post(room, "second")).seq, 2)
        messages, last_seq = await self.store.messages(room, 0, 10)
        self.assertEqual(([m.seq for m in messages], last_seq), ([1, 2], 2))

    async def test_post_room_gone(self) -> None:
        """Posting to a room whose row has been deleted fails with L{NotFound}."""
        room = await self.create()
        self.delete_room_behind_back(room)
        await self.assertFailure(self.store.post(room, chat("hello")), NotFound)

    async def test_update_room(self) -> None:
        """C{update_room} stores the new settings and returns the room as changed."""
        room = await self.create()
        changed = RoomChanges(state="paused", title="Waves", hashtags=("#waves",),
                              expires_at=NOW + 7_200_000)
        updated = await self.store.update_room(room, changed)
        self.assertEqual(updated, evolve(room, state="paused", title="Waves",
                                         hashtags=("#waves",), expires_at=NOW + 7_200_000))
        self.assertEqual(await self.store.room("physics-101"), updated)

    async def test_update_room_gone(self) -> None:
        """Updating a room that is gone gives None."""
        room = await self.create()
        self.delete_room_behind_back(room)
        changed = RoomChanges(state="open", title="t", hashtags=(), expires_at=NOW)
        self.assertIsNone(await self.store.update_room(room, changed))

    async def test_delete_room(self) -> None:
        """C{delete_room} removes the room and all in it; its name is free again."""
        room = await self.create()
        await self.store.add_participant(room.id, "p1", "ada", b"1" * 32, NOW)
        await self.post(room, "m1")
        self.assertTrue(await self.store.delete_room(room))
        self.assertFalse(await self.store.delete_room(room))
        self.assertIsNone(await self.store.room("physics-101"))
        self.assertIsNone(await self.store.participant(room.id, b"1" * 32))
        again = await self.create()
        self.assertEqual(await self.store.messages(again, 0, 10), ([], 0))

    async def test_close_expired(self) -> None:
        """
        C{close_expired} closes the rooms expired by then (at the moment of expiry too) and
        returns them as closed; rooms not expired and rooms closed already are left alone.
        """
        for name, expires_at in (("old", NOW - 1), ("due", NOW), ("live", NOW + 1)):
            await self.create(name, expires_at=expires_at)
        shut = await self.create("shut", expires_at=NOW - 1)
        await self.store.update_room(shut, RoomChanges(
            state="closed", title=shut.title, hashtags=shut.hashtags, expires_at=NOW - 1))
        closed = await self.store.close_expired(NOW, 10)
        self.assertEqual(sorted(room.name for room in closed), ["due", "old"])
        for room in closed:
            self.assertEqual(room.state, "closed")
            self.assertEqual(await self.store.room(room.name), room)
        self.assertEqual((await self.store.room("live")).state, "open")
        self.assertEqual(await self.store.close_expired(NOW, 10), [])

    async def test_close_expired_limit(self) -> None:
        """C{close_expired} closes at most C{limit} rooms a call, the longest expired first."""
        for i in range(5):
            await self.create(f"room-{i}", expires_at=NOW - 5 + i)
        batches = [await self.store.close_expired(NOW, 2) for _ in range(4)]
        self.assertEqual([sorted(room.name for room in batch) for batch in batches],
                         [["room-0", "room-1"], ["room-2", "room-3"], ["room-4"], []])

    async def test_purge_expired(self) -> None:
        """
        C{purge_expired} deletes the rooms expired by then, closed or not, with their
        messages and participants, and returns them; later ones stay.
        """
        old = await self.create("old", expires_at=NOW - 1)
        await self.store.add_participant(old.id, "p1", "ada", b"1" * 32, NOW)
        await self.post(old, "m1")
        await self.create("due", expires_at=NOW)
        await self.store.close_expired(NOW, 10)
        await self.create("live", expires_at=NOW + 1)
        purged = await self.store.purge_expired(NOW, 10)
        self.assertEqual(sorted((room.name, room.last_seq) for room in purged),
                         [("due", 0), ("old", 1)])
        self.assertIsNone(await self.store.room("old"))
        self.assertIsNone(await self.store.room("due"))
        self.assertIsNone(await self.store.participant(old.id, b"1" * 32))
        await self.assertFailure(self.store.messages(old, 0, 10), NotFound)
        self.assertIsNotNone(await self.store.room("live"))
        self.assertEqual(await self.store.purge_expired(NOW, 10), [])
        again = await self.create("old")
        self.assertEqual(await self.store.messages(again, 0, 10), ([], 0))

    async def test_purge_expired_limit(self) -> None:
        """C{purge_expired} deletes at most C{limit} rooms a call, the longest expired first."""
        for i in range(3):
            await self.create(f"room-{i}", expires_at=NOW - 3 + i)
        batches = [await self.store.purge_expired(NOW, 2) for _ in range(3)]
        self.assertEqual([sorted(room.name for room in batch) for batch in batches],
                         [["room-0", "room-1"], ["room-2"], []])

    async def test_delete_message(self) -> None:
        """A deleted message is left out of listings; its seq stays used."""
        room = await self.create()
        for body in ("m1", "m2", "m3"):
            await self.post(room, body)
        self.assertTrue(await self.store.delete_message(room, 2))
        self.assertFalse(await self.store.delete_message(room, 2))
        self.assertFalse(await self.store.delete_message(room, 9))
        messages, last_seq = await self.store.messages(room, 0, 10)
        self.assertEqual(([m.seq for m in messages], last_seq), ([1, 3], 3))
        self.assertEqual((await self.post(room, "m4")).seq, 4)

    async def test_messages_room_gone(self) -> None:
        """Reading messages of a room whose row has been deleted fails with L{NotFound}."""
        room = await self.create()
        self.delete_room_behind_back(room)
        await self.assertFailure(self.store.messages(room, 0, 10), NotFound)

    async def test_messages(self) -> None:
        """C{messages} gives the messages after a seq, ascending, with the room's last seq."""
        room = await self.create()
        for i in range(1, 6):
            await self.post(room, f"m{i}")
        messages, last_seq = await self.store.messages(room, 2, 100)
        self.assertEqual([(m.seq, m.body) for m in messages], [(3, "m3"), (4, "m4"), (5, "m5")])
        self.assertEqual(last_seq, 5)

    async def test_messages_limit(self) -> None:
        """A page cut short by C{limit} still reports the room's last seq."""
        room = await self.create()
        for i in range(1, 6):
            await self.post(room, f"m{i}")
        messages, last_seq = await self.store.messages(room, 1, 2)
        self.assertEqual([m.seq for m in messages], [2, 3])
        self.assertEqual(last_seq, 5)

    async def test_messages_none(self) -> None:
        """After the last seq (or in an empty room) there are no messages."""
        room = await self.create()
        self.assertEqual(await self.store.messages(room, 0, 10), ([], 0))
        await self.post(room, "m1")
        self.assertEqual(await self.store.messages(room, 1, 10), ([], 1))

    async def test_messages_other_room(self) -> None:
        """C{messages} gives only the room's own messages."""
        one, two = await self.create("one"), await self.create("two")
        await self.post(one, "in one")
        await self.post(two, "in two")
        messages, _ = await self.store.messages(two, 0, 10)
        self.assertEqual([(m.room, m.body) for m in messages], [("two", "in two")])

    async def test_social_source(self) -> None:
        """A social message's C{source} dict comes back as it was posted."""
        room = await self.create()
        source = {"network": "twitter", "id": "1460323737035677698",
                  "url": "https://x.com/ada/status/1460323737035677698"}
        posted = (await self.store.post(room, NewMessage(
            kind="social", author="@ada", participant_id=None, body="hi", created_at=NOW,
            source=source)))
        self.assertEqual(posted.source, source)
        [read], _ = await self.store.messages(room, 0, 10)
        self.assertEqual((read.kind, read.author, read.source), ("social", "@ada", source))

    async def test_tagged_rooms(self) -> None:
        """C{tagged_rooms}: open, unexpired rooms with hashtags, oldest first; not the others."""
        first = await self.create("first", hashtags=("#a", "#b"))
        await self.create("untagged", hashtags=())
        await self.create("expired", expires_at=NOW)
        paused = await self.create("paused")
        await self.store.update_room(paused, RoomChanges(
            state="paused", title="p", hashtags=("#c",), expires_at=paused.expires_at))
        last = await self.create("last")
        tagged = await self.store.tagged_rooms(NOW)
        self.assertEqual([(room.name, room.hashtags) for room in tagged],
                         [("first", ("#a", "#b")), ("last", ("#phys101",))])
        self.assertEqual(tagged, [first, last])
        self.assertEqual(await self.store.tagged_rooms(first.expires_at), [])

    async def test_social_message(self) -> None:
        """C{social_message} finds the seq of a room's social message by its network and id."""
        one, two = await self.create("one"), await self.create("two")

        async def social(room: Room, network: str, id: str) -> int:
            message = await self.store.post(room, NewMessage(
                kind="social", author="@ada", participant_id=None, body="hi", created_at=NOW,
                source={"network": network, "id": id, "url": None}))
            return int(message.seq)

        await self.post(one, "chat")
        seq = await social(one, "mastodon", "110")
        await social(one, "twitter", "111")
        await social(two, "mastodon", "111")
        self.assertEqual(await self.store.social_message(one, "mastodon", "110"), seq)
        self.assertIsNone(await self.store.social_message(one, "twitter", "110"))
        self.assertIsNone(await self.store.social_message(one, "mastodon", "111"))
        self.assertIsNone(await self.store.social_message(two, "mastodon", "110"))
        await self.store.delete_message(one, seq)
        self.assertIsNone(await self.store.social_message(one, "mastodon", "110"))

    async def pending(self, limit: int = 100) -> list[Delivery]:
        return await self.store.pending_deliveries(limit)

    async def test_outbox_empty(self) -> None:
        """A new store has nothing pending; adding no deliveries stores none."""
        self.assertEqual(await self.pending(), [])
        await self.store.add_outbox([])
        self.assertEqual(self.stored_outbox(), [])

    async def test_no_outbox(self) -> None:
        """Writes without an outbox (the default) store no deliveries."""
        room = await self.create()
        await self.post(room, "m1")
        await self.store.update_room(room, RoomChanges(
            state="paused", title="t", hashtags=(), expires_at=NOW + 1))
        await self.store.delete_message(room, 1)
        await self.store.delete_room(room)
        self.assertEqual(self.stored_outbox(), [])

    async def test_create_room_outbox(self) -> None:
        """C{create_room} stores its deliveries, in order, with the room."""
        sent = [delivery("e1", "webhook a"), delivery("e1", "webhook b")]
        await self.store.create_room(new_room(), outbox=sent)
        self.assertEqual(await self.pending(), sent)

    async def test_create_room_outbox_name_taken(self) -> None:
        """A room that cannot be created (its name is taken) stores no deliveries."""
        await self.create()
        await self.assertFailure(
            self.store.create_room(new_room(), outbox=[delivery()]), NameTaken)
        self.assertEqual(self.stored_outbox(), [])

    async def test_create_room_outbox_atomic(self) -> None:
        """A delivery that cannot be stored fails C{create_room} whole: no room either."""
        await self.assertFailure(
            self.store.create_room(new_room(), outbox=[delivery(), BROKEN]), Exception)
        self.assertIsNone(await self.store.room("physics-101"))
        self.assertEqual(self.stored_outbox(), [])

    async def test_post_outbox_seq(self) -> None:
        """
        C{post} stores its deliveries with the message's seq in place of the first
        L{SEQ_PLACEHOLDER} of each body; later ones, and bodies with none, stay as they are.
        """
        room = await self.create()
        await self.post(room, "m1")
        event = json.dumps({"id": "e2", "data": {"seq": None, "body": '"seq":null é 🌊'}},
                           separators=(",", ":"), ensure_ascii=False).encode()
        twice = b'{"seq":null,"again":{"seq":null}}'
        plain = b'{"id":"e2"}'
        message = await self.store.post(room, chat('"seq":null é 🌊'), outbox=[
            delivery("e2", "webhook a", event), delivery("e2", "webhook b", twice),
            delivery("e2", "replay c", plain)])
        self.assertEqual(message.seq, 2)
        self.assertIn(SEQ_PLACEHOLDER, event)
        self.assertEqual([d.body for d in await self.pending()], [
            event.replace(SEQ_PLACEHOLDER, b'"seq":2', 1),
            b'{"seq":2,"again":{"seq":null}}',
            plain])
        self.assertEqual(json.loads((await self.pending())[0].body)["data"],
                         {"seq": 2, "body": '"seq":null é 🌊'})

    async def test_post_outbox_seq_each_post(self) -> None:
        """Each post fills in its own seq."""
        room = await self.create()
        for i in range(3):
            await self.store.post(room, chat(f"m{i}"), outbox=[delivery(f"e{i}")])
        self.assertEqual([(d.id, d.body) for d in await self.pending()],
                         [(f"e{i}", b'{"id":"e1","data":{"seq":%d}}' % (i + 1))
                          for i in range(3)])

    async def test_post_outbox_room_gone(self) -> None:
        """A post to a room that is gone stores no deliveries."""
        room = await self.create()
        self.delete_room_behind_back(room)
        await self.assertFailure(self.store.post(room, chat("x"), outbox=[delivery()]), NotFound)
        self.assertEqual(self.stored_outbox(), [])

    async def test_post_outbox_atomic(self) -> None:
        """A delivery that cannot be stored fails C{post} whole: no message, no seq used."""
        room = await self.create()
        await self.assertFailure(
            self.store.post(room, chat("x"), outbox=[delivery(), BROKEN]), Exception)
        self.assertEqual(await self.store.messages(room, 0, 10), ([], 0))
        self.assertEqual(self.stored_outbox(), [])
        self.assertEqual((await self.post(room, "y")).seq, 1)

    async def test_update_room_outbox(self) -> None:
        """C{update_room} stores its deliveries; none for a room that is gone."""
        room = await self.create()
        changed = RoomChanges(state="paused", title="t", hashtags=(), expires_at=NOW + 1)
        await self.store.update_room(room, changed, outbox=[delivery("e1")])
        self.delete_room_behind_back(room)
        self.assertIsNone(await self.store.update_room(room, changed, outbox=[delivery("e2")]))
        self.assertEqual([d.id for d in await self.pending()], ["e1"])

    async def test_update_room_outbox_atomic(self) -> None:
        """A delivery that cannot be stored fails C{update_room} whole: the room is unchanged."""
        room = await self.create()
        changed = RoomChanges(state="paused", title="t", hashtags=(), expires_at=NOW + 1)
        await self.assertFailure(self.store.update_room(room, changed, outbox=[BROKEN]),
                                 Exception)
        self.assertEqual(await self.store.room("physics-101"), room)
        self.assertEqual(self.stored_outbox(), [])

    async def test_delete_room_outbox(self) -> None:
        """C{delete_room} stores its deliveries; none if the room was gone already."""
        room = await self.create()
        self.assertTrue(await self.store.delete_room(room, outbox=[delivery("e1")]))
        self.assertFalse(await self.store.delete_room(room, outbox=[delivery("e2")]))
        self.assertEqual([d.id for d in await self.pending()], ["e1"])

    async def test_delete_room_outbox_atomic(self) -> None:
        """A delivery that cannot be stored fails C{delete_room} whole: the room stays."""
        room = await self.create()
        await self.assertFailure(self.store.delete_room(room, outbox=[BROKEN]), Exception)
        self.assertEqual(await self.store.room("physics-101"), room)
        self.assertEqual(self.stored_outbox(), [])

    async def test_delete_message_outbox(self) -> None:
        """
        C{delete_message} stores its deliveries; none if the message was deleted
        already or there is no such message.
        """
        room = await self.create()
        await self.post(room, "m1")
        self.assertTrue(await self.store.delete_message(room, 1, outbox=[delivery("e1")]))
        self.assertFalse(await self.store.delete_message(room, 1, outbox=[delivery("e2")]))
        self.assertFalse(await self.store.delete_message(room, 9, outbox=[delivery("e3")]))
        self.assertEqual([d.id for d in await self.pending()], ["e1"])

    async def test_delete_message_outbox_atomic(self) -> None:
        """A delivery that cannot be stored fails C{delete_message} whole: the message stays."""
        room = await self.create()
        await self.post(room, "m1")
        await self.assertFailure(self.store.delete_message(room, 1, outbox=[BROKEN]), Exception)
        self.assertEqual([m.seq for m in (await self.store.messages(room, 0, 10))[0]], [1])
        self.assertEqual(self.stored_outbox(), [])

    async def test_add_outbox_binary(self) -> None:
        """Any bytes, and absent content type and event, come back exactly as stored."""
        sent = [delivery("r1", "replay http://10.0.0.2:8000", bytes(range(256)), method="PUT",
                         path="/a/b?c=d&e=%20", content_type=None, event=None),
                delivery("r2", "replay http://10.0.0.2:8000", b"", method="DELETE",
                         created_at=NOW + 1)]
        await self.store.add_outbox(sent)
        self.assertEqual(await self.pending(), sent)

    async def test_add_outbox_again(self) -> None:
        """A delivery stored again (the same id and destination) stays one row, as it was."""
        await self.store.add_outbox([delivery("e1", body=b"first")])
        await self.store.add_outbox([delivery("e1", body=b"second"), delivery("e2")])
        self.assertEqual([(d.id, d.body) for d in await self.pending()],
                         [("e1", b"first"), ("e2", b'{"id":"e1","data":{"seq":null}}')])

    async def test_outbox_order(self) -> None:
        """Deliveries are pending in the order they were stored, across writes of every kind."""
        room = await self.store.create_room(new_room(), outbox=[delivery("a")])
        await self.store.add_outbox([delivery("b"), delivery("c")])
        await self.store.post(room, chat("m1"), outbox=[delivery("d")])
        await self.store.update_room(room, RoomChanges(
            state="paused", title="t", hashtags=(), expires_at=NOW + 1), outbox=[delivery("e")])
        await self.store.add_outbox([delivery("f")])
        await self.store.delete_message(room, 1, outbox=[delivery("g")])
        await self.store.delete_room(room, outbox=[delivery("h")])
        self.assertEqual([d.id for d in await self.pending()], list("abcdefgh"))

    async def test_same_id_two_destinations(self) -> None:
        """One event for two destinations is two deliveries, each settled on its own."""
        one, two = delivery("e1", "webhook a"), delivery("e1", "webhook b")
        await self.store.add_outbox([one, two])
        self.assertEqual(await self.pending(), [one, two])
        await self.store.delivered(one)
        self.assertEqual(await self.pending(), [two])

    async def test_pending_limit(self) -> None:
        """C{pending_deliveries} gives at most C{limit}, the oldest first."""
        await self.store.add_outbox([delivery(f"e{i}") for i in range(5)])
        self.assertEqual([d.id for d in await self.pending(2)], ["e0", "e1"])
        self.assertEqual(len(await self.pending(5)), 5)
        self.assertEqual(await self.pending(0), [])

    async def test_pending_for_destination(self) -> None:
        """With a destination, C{pending_deliveries} gives only its deliveries, oldest first."""
        await self.store.add_outbox([delivery(f"e{i}", f"webhook {'ab'[i % 2]}")
                                     for i in range(6)])
        await self.store.dead_letter(delivery("e2", "webhook a"))
        found = await self.store.pending_deliveries(2, "webhook a")
        self.assertEqual([(d.id, d.destination) for d in found],
                         [("e0", "webhook a"), ("e4", "webhook a")])
        self.assertEqual([d.id for d in await self.store.pending_deliveries(10, "webhook b")],
                         ["e1", "e3", "e5"])
        self.assertEqual(await self.store.pending_deliveries(10, "webhook c"), [])

    async def test_delivered(self) -> None:
        """A delivered delivery is gone; settling it again, or an unknown one, is harmless."""
        sent = [delivery(f"e{i}") for i in range(3)]
        await self.store.add_outbox(sent)
        await self.store.delivered(sent[1])
        await self.store.delivered(sent[1])
        await self.store.delivered(delivery("unknown"))
        self.assertEqual(await self.pending(), [sent[0], sent[2]])
        self.assertEqual([row[0] for row in self.stored_outbox()], ["e0", "e2"])

    async def test_dead_letter(self) -> None:
        """A dead-lettered delivery is kept, marked dead, and never pending again."""
        sent = [delivery(f"e{i}") for i in range(3)]
        await self.store.add_outbox(sent)
        await self.store.dead_letter(sent[0])
        await self.store.add_outbox([sent[0]])
        self.assertEqual(await self.pending(), sent[1:])
        self.assertEqual(await self.pending(1), sent[1:2])
        self.assertEqual(self.stored_outbox(), [(d.id, d.destination, d is sent[0]) for d in sent])


def sqlite_execute(path: str, sql: str, *args: Any) -> list[Any]:
    """Run one statement on the file C{path} with a connection of its own (another process)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA foreign_keys = ON")
        return db.execute(sql, args).fetchall()


class SQLiteStoreTests(StoreContractMixin, TestCase):
    """The contract on SQLite, and SQLite's own file handling."""

    async def make_store(self) -> SQLiteStore:
        self.path = database_path(self)
        return open_store(self, self.path)

    def delete_room_behind_back(self, room: Room) -> None:
        sqlite_execute(self.path, "DELETE FROM rooms WHERE id = ?", room.id)

    def stored_outbox(self) -> list[tuple[str, str, bool]]:
        rows = sqlite_execute(self.path,
                              "SELECT id, destination, dead FROM outbox ORDER BY position")
        return [(id, destination, bool(dead)) for id, destination, dead in rows]

    async def test_writes_without_outbox(self) -> None:
        """Without an outbox, each write runs the statements it always did, none of the outbox."""
        statements: list[str] = []
        self.store._db.set_trace_callback(statements.append)
        room = await self.create()
        await self.post(room, "m1")
        self.assertEqual([s.split()[0] for s in statements],
                         ["BEGIN", "INSERT", "COMMIT", "BEGIN", "UPDATE", "INSERT", "COMMIT"])
        await self.store.update_room(room, RoomChanges(
            state="paused", title="t", hashtags=(), expires_at=NOW + 1))
        await self.store.delete_message(room, 1)
        await self.store.delete_room(room)
        self.assertFalse([s for s in statements if "outbox" in s])

    async def test_outbox_survives_reopen(self) -> None:
        """What is pending is still pending when the file is opened again (after a crash)."""
        await self.store.add_outbox([delivery("e1")])
        again = open_store(self, self.path)
        self.assertEqual(resolve(self, again.pending_deliveries(10)), [delivery("e1")])

    def test_outbox_index(self) -> None:
        """The replay queue reads what is pending through an index that leaves dead ones out."""
        plan = sqlite_execute(
            self.path, "EXPLAIN QUERY PLAN SELECT id, destination, body FROM outbox"
            " WHERE NOT dead ORDER BY position LIMIT 100")
        self.assertIn("outbox_pending", str(plan))

    def test_migrations_applied(self) -> None:
        """A fresh file gets every migration, recorded once each in schema_version."""
        rows = sqlite_execute(self.path, "SELECT version FROM schema_version")
        versions = [version for (version,) in rows]
        self.assertEqual(versions, [m.version for m in migrations("sqlite")])
        self.assertEqual(versions[0], 1)

    async def test_reopen(self) -> None:
        """Re-opening a file applies no migration again and keeps its data."""
        room = await self.create()
        await self.post(room, "kept")
        resolve(self, self.store.close())
        before = sqlite_execute(self.path, "SELECT version FROM schema_version ORDER BY version")

        again = open_store(self, self.path)
        after = sqlite_execute(self.path, "SELECT version FROM schema_version ORDER BY version")
        self.assertEqual(after, before)
        self.assertEqual(len(after), len(migrations("sqlite")))
        messages, last_seq = resolve(self, again.messages(room, 0, 10))
        self.assertEqual(([m.body for m in messages], last_seq), (["kept"], 1))

    def test_expiry_index(self) -> None:
        """The reaper finds expired rooms through an index on C{expires_at}."""
        plan = sqlite_execute(
            self.path, "EXPLAIN QUERY PLAN SELECT id FROM rooms WHERE expires_at <= ?"
            " AND state <> 'closed' ORDER BY expires_at LIMIT 100", NOW)
        self.assertIn("rooms_expires_at", str(plan))

    def test_wal(self) -> None:
        """The file is in WAL mode, so other processes can read while tmd writes."""
        self.assertEqual(sqlite_execute(self.path, "PRAGMA journal_mode"), [("wal",)])

    async def test_reads_while_open(self) -> None:
        """Another connection sees committed messages while the store is open."""
        room = await self.create()
        await self.post(room, "visible")
        self.assertEqual(sqlite_execute(self.path, "SELECT seq, body FROM messages"),
                         [(1, "visible")])

    def test_close_stops_pool(self) -> None:
        """C{close()} closes the connection and stops the pool; closing again is harmless."""
        pool = ImmediatePool()
        store = SQLiteStore(database_path(self), ImmediateReactor(), pool=pool)
        resolve(self, store.open())
        self.assertTrue(pool.started)
        resolve(self, store.close())
        self.assertTrue(pool.stopped)
        self.assertIsNone(resolve(self, store.close()))


class PostgresStoreTests(StoreContractMixin, TestCase):
    """The contract on PostgreSQL, and PostgreSQL's own concerns: migrations, concurrency."""

    async def make_store(self) -> PostgresStore:
        self.url = fresh_schema(self)
        return await self.open_store()

    async def open_store(self, pool_size: int = 2) -> PostgresStore:
        store = PostgresStore(self.url, reactor, pool_size)
        await store.open()
        self.addCleanup(store.close)
        return store

    def delete_room_behind_back(self, room: Room) -> None:
        execute(self.url, "DELETE FROM rooms WHERE id = %s", room.id)

    def stored_outbox(self) -> list[tuple[str, str, bool]]:
        rows = execute(self.url, "SELECT id, destination, dead FROM outbox ORDER BY position")
        return [(id, destination, dead) for id, destination, dead in rows]

    def record_statements(self) -> list[str]:
        """The SQL of every statement the store runs from now on, in order."""
        statements: list[str] = []
        query = self.store._query

        def spy(sql: str, params: Any = None) -> Deferred[list[tuple[Any, ...]]]:
            statements.append(sql)
            return query(sql, params)

        self.store._query = spy
        return statements

    async def test_writes_without_outbox(self) -> None:
        """
        Without an outbox, each write is the one statement it always was: the post
        path's cost does not change when the outbox is off.
        """
        statements = self.record_statements()
        room = await self.create()
        await self.post(room, "m1")
        await self.store.update_room(room, RoomChanges(
            state="paused", title="t", hashtags=(), expires_at=NOW + 1))
        await self.store.delete_message(room, 1)
        await self.store.delete_room(room)
        self.assertEqual(statements, [postgres._CREATE_ROOM, postgres._POST,
                                      postgres._UPDATE_ROOM, postgres._DELETE_MESSAGE,
                                      postgres._DELETE_ROOM])
        self.assertFalse([s for s in statements if "outbox" in s])

    async def test_writes_with_outbox_one_statement(self) -> None:
        """With an outbox, each write is still one statement: one round trip, one transaction."""
        statements = self.record_statements()
        room = await self.store.create_room(new_room(), outbox=[delivery("a")])
        await self.store.post(room, chat("m1"), outbox=[delivery("b")])
        await self.store.update_room(room, RoomChanges(
            state="paused", title="t", hashtags=(), expires_at=NOW + 1), outbox=[delivery("c")])
        await self.store.delete_message(room, 1, outbox=[delivery("d")])
        await self.store.delete_room(room, outbox=[delivery("e")])
        self.assertEqual(statements, [postgres._CREATE_ROOM_OUTBOX, postgres._POST_OUTBOX,
                                      postgres._UPDATE_ROOM_OUTBOX, postgres._DELETE_MESSAGE_OUTBOX,
                                      postgres._DELETE_ROOM_OUTBOX])
        self.assertEqual([d.id for d in await self.store.pending_deliveries(10)], list("abcde"))

    async def test_outbox_seen_by_other_daemons(self) -> None:
        """What one store left pending, another (a daemon started after a crash) finds."""
        await self.store.add_outbox([delivery("e1")])
        other = await self.open_store(1)
        self.assertEqual(await other.pending_deliveries(10), [delivery("e1")])

    async def test_outbox_index(self) -> None:
        """The replay queue reads what is pending through an index that leaves dead ones out."""
        rows = execute(self.url, "SELECT indexdef FROM pg_indexes WHERE indexname = %s"
                       " AND schemaname = current_schema()", "outbox_pending")
        self.assertEqual(len(rows), 1)
        self.assertIn("(\"position\") WHERE (NOT dead)", rows[0][0])

    def test_migrations_in_step(self) -> None:
        """Both engines have the same numbered migrations, under the same names."""
        def numbered(engine: str) -> list[tuple[int, str]]:
            return [(m.version, m.name) for m in migrations(engine)]

        self.assertEqual(numbered("postgresql"), numbered("sqlite"))

    def test_migrations_applied(self) -> None:
        """A fresh schema gets every migration, recorded once each in schema_version."""
        rows = execute(self.url, "SELECT version FROM schema_version ORDER BY version")
        self.assertEqual([v for (v,) in rows], [m.version for m in migrations("postgresql")])

    async def test_reopen_and_concurrent_opens(self) -> None:
        """Daemons opening one database at once migrate it once, and keep what was there."""
        room = await self.create()
        await self.post(room, "kept")
        stores = [PostgresStore(self.url, reactor, 1) for _ in range(3)]
        await gatherResults([store.open() for store in stores])
        for store in stores:
            self.addCleanup(store.close)
        rows = execute(self.url, "SELECT version FROM schema_version ORDER BY version")
        self.assertEqual(len(rows), len(migrations("postgresql")))
        messages, last_seq = await stores[0].messages(room, 0, 10)
        self.assertEqual(([m.body for m in messages], last_seq), (["kept"], 1))

    async def test_concurrent_posts(self) -> None:
        """
        Concurrent posters on separate stores (as on separate daemons) get seq 1..N,
        each exactly once: the room's row lock serialises them.
        """
        room = await self.create()
        stores = [self.store, await self.open_store(3), await self.open_store(3)]
        posts = [stores[i % 3].post(room, chat(f"m{i}")) for i in range(300)]
        seqs = [m.seq for m in await gatherResults(posts)]
        self.assertEqual(sorted(seqs), list(range(1, 301)))
        messages, last_seq = await self.store.messages(room, 0, 1000)
        self.assertEqual(([m.seq for m in messages], last_seq), (list(range(1, 301)), 300))

    async def test_message(self) -> None:
        """C{message(room_id, seq)} reads one message back; None for a seq with none."""
        room = await self.create()
        posted = await self.post(room, "one")
        self.assertEqual(await self.store.message(room.id, 1), posted)
        self.assertIsNone(await self.store.message(room.id, 2))

    async def test_reapers_race(self) -> None:
        """
        Daemons closing and purging expired rooms at once (each on its own store) take
        each room once: what one has locked the others skip.
        """
        for i in range(40):
            await self.create(f"room-{i}", expires_at=NOW - i)
        stores = [self.store, await self.open_store(2), await self.open_store(2)]

        async def drain(store: PostgresStore, reaping: str) -> list[str]:
            taken: list[str] = []
            while batch := await getattr(store, reaping)(NOW, 3):
                taken += [room.name for room in batch]
            return taken

        for reaping in ("close_expired", "purge_expired"):
            takers = [Deferred.fromCoroutine(drain(store, reaping)) for store in stores * 2]
            taken = [name for names in await gatherResults(takers) for name in names]
            self.assertEqual(sorted(taken), sorted(f"room-{i}" for i in range(40)), reaping)
        self.assertEqual(execute(self.url, "SELECT count(*) FROM rooms"), [(0,)])

    async def test_expiry_index(self) -> None:
        """The reaper finds expired rooms through an index on C{expires_at}."""
        rows = execute(self.url, "SELECT indexdef FROM pg_indexes WHERE indexname = %s"
                       " AND schemaname = current_schema()", "rooms_expires_at")
        self.assertEqual(len(rows), 1)
        self.assertIn("(expires_at)", rows[0][0])

    async def test_unreachable(self) -> None:
        """A server that cannot be reached fails C{open} with a 503 that says where, at once."""
        store = PostgresStore("postgresql://tmd@127.0.0.1:1/tmd", reactor)
        error = await self.assertFailure(store.open(), Unavailable)
        self.assertIn("Cannot connect to PostgreSQL at tmd@127.0.0.1:1/tmd", str(error))

    async def test_connections_killed(self) -> None:
        """
        When the server drops every connection, calls fail with a 503 until the store
        has reconnected, which it does by itself; then everything works again.
        """
        room = await self.create()
        self.assertEqual(terminate(self.url), 2)
        await eventually(lambda: not any(link.up for link in self.store._links))
        error = await self.assertFailure(self.store.post(room, chat("lost")), Unavailable)
        self.assertEqual(error.retry_after, 2)
        await eventually(lambda: all(link.up for link in self.store._links))
        self.assertEqual((await self.post(room, "back")).seq, 1)
