"""
Tests for L{tmd.reaper}: expired rooms close, and are deleted a grace period later.

A L{Clock} drives the reaper and the chat core. In L{ReaperTests} the store is a
real SQLite file run without threads, so a run is over within the C{advance} that
starts it; L{ReaperLiveTests} adds the web service and real websocket clients;
L{PostgresReaperTests} has two daemons share one PostgreSQL database.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.clients import connect, count
from tests.helpers import ImmediateReactor, eventually, in_thread_now, open_store, reject, resolve
from tests.postgres import fresh_schema
from tests.server import start_server
from tests.test_hub import Recorder
from tmd.bus import PostgresBus
from tmd.chat import Chat
from tmd.errors import NotFound, Unavailable
from tmd.hub import Hub
from tmd.model import Room
from tmd.reaper import INTERVAL, Reaper
from tmd.store import IStore
from tmd.store.postgres import PostgresStore

START = 1_764_000_000.25
"""The clock's time when each test starts, in seconds."""
HOUR = 3600
PURGE_AFTER = 2 * HOUR
ROOM = "/api/v1/rooms/physics-101"


class TroubledStore:
    """
    The real store, except that a test decides how the reaper's next C{close_expired}
    calls go: each meets the next of C{trouble} first, if any.
    """

    def __init__(self, store: IStore) -> None:
        self._store = store
        self.trouble: list[Exception | Deferred[None]] = []
        """An error to fail with, or a Deferred that holds the call until it fires."""
        self.closing: list[int] = []
        """The C{limit} of every C{close_expired} call."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def close_expired(self, now_ms: int, limit: int) -> Deferred[list[Room]]:
        self.closing.append(limit)
        if not self.trouble:
            return self._store.close_expired(now_ms, limit)
        trouble = self.trouble.pop(0)
        if isinstance(trouble, Exception):
            return fail(trouble)
        return trouble.addCallback(lambda _: self._store.close_expired(now_ms, limit))


def changes(recorder: Recorder) -> list[tuple[str, str]]:
    """What a subscriber heard besides presence: C{("room", state)} or C{("gone", code)}."""
    heard = []
    for event, frame in zip(recorder.events, recorder.frames(), strict=True):
        if event.gone:
            heard.append(("gone", str(frame["code"])))
        elif frame["type"] == "room":
            heard.append(("room", frame["room"]["state"]))  # type: ignore[index]
    return heard


class ReaperTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = ImmediateReactor()
        self.clock.advance(START)
        self.store = TroubledStore(open_store(self, reactor=self.clock))
        self.hub = Hub(self.clock)
        self.chat = Chat(self.store, self.hub, self.clock, in_thread_now)  # type: ignore[arg-type]
        self.reaper = self.reaper_with()

    def reaper_with(self, purge_after: int = PURGE_AFTER, batch: int = 100) -> Reaper:
        reaper = Reaper(self.chat, self.clock, purge_after, batch=batch)
        self.addCleanup(lambda: resolve(self, reaper.stop()))
        return reaper

    def create(self, name: str = "physics-101", lifetime: int = HOUR) -> tuple[Room, str]:
        return resolve(self, self.chat.create_room({"name": name, "lifetime": lifetime}))

    def watch(self, room: Room) -> Recorder:
        recorder = Recorder()
        self.hub.subscribe(room.id, recorder)
        return recorder

    def stored(self, name: str) -> Room | None:
        return resolve(self, self.store.room(name))

    def run_for(self, seconds: float) -> None:
        """Let C{seconds} pass, a reaper interval at a time."""
        self.clock.pump([INTERVAL] * round(seconds / INTERVAL))

    def test_closes_expired_room(self) -> None:
        """
        At the run after a room's expiry, the reaper closes it and its subscribers get a
        room frame saying so; a room not yet expired is left alone.
        """
        room, _ = self.create()
        later, _ = self.create("later", lifetime=2 * HOUR)
        on_room, on_later = self.watch(room), self.watch(later)
        self.reaper.start()
        self.run_for(HOUR - INTERVAL)
        self.assertEqual((self.stored("physics-101").state, changes(on_room)), ("open", []))
        self.run_for(INTERVAL)
        self.assertEqual(changes(on_room), [("room", "closed")])
        frame = json.loads(on_room.events[-1].frame)
        self.assertEqual((frame["room"]["name"], frame["room"]["online"]), ("physics-101", 1))
        self.assertEqual(self.stored("physics-101").state, "closed")
        self.assertEqual((self.stored("later").state, changes(on_later)), ("open", []))

    def test_purges_after_grace(self) -> None:
        """
        C{purge_after} seconds past expiry the room is deleted with its messages, and its
        subscribers get the gone event (their sockets close with 4404).
        """
        room, _ = self.create()
        _, token = resolve(self, self.chat.join(room, {"nickname": "ada"}))
        resolve(self, self.chat.post("physics-101", token, {"body": "Is light a wave?"}))
        recorder = self.watch(room)
        self.reaper.start()
        self.run_for(HOUR + PURGE_AFTER - INTERVAL)
        self.assertEqual(self.stored("physics-101").last_seq, 1)
        self.run_for(INTERVAL)
        self.assertEqual(changes(recorder), [("room", "closed"), ("gone", "not_found")])
        self.assertIsNone(self.stored("physics-101"))
        reject(self, self.chat.room("physics-101"), NotFound)
        reject(self, self.store.messages(room, 0, 10), NotFound)

    def test_purge_at_expiry(self) -> None:
        """With C{purge_after} 0, one run closes an expired room and deletes it."""
        room, _ = self.create()
        recorder = self.watch(room)
        self.clock.advance(HOUR)
        self.reaper_with(purge_after=0).start()
        self.assertEqual(changes(recorder), [("room", "closed"), ("gone", "not_found")])
        self.assertIsNone(self.stored("physics-101"))

    def test_closed_by_owner(self) -> None:
        """A room its owner closed is not closed again at expiry, but is deleted in time."""
        room, owner = self.create()
        resolve(self, self.chat.update_room("physics-101", owner, {"state": "closed"}))
        recorder = self.watch(room)
        self.reaper.start()
        self.run_for(HOUR)
        self.assertEqual(changes(recorder), [])
        self.run_for(PURGE_AFTER)
        self.assertEqual(changes(recorder), [("gone", "not_found")])

    def test_extended_room_survives(self) -> None:
        """A room whose owner extends its lifetime before expiry stays open until the new end."""
        room, owner = self.create()
        recorder = self.watch(room)
        self.reaper.start()
        self.run_for(HOUR / 2)
        resolve(self, self.chat.update_room("physics-101", owner, {"lifetime": 2 * HOUR}))
        self.run_for(HOUR)
        self.assertEqual((self.stored("physics-101").state, changes(recorder)),
                         ("open", [("room", "open")]))
        self.run_for(HOUR / 2)
        self.assertEqual(changes(recorder), [("room", "open"), ("room", "closed")])

    def test_batches(self) -> None:
        """A run closes every expired room, a batch at a time, until a batch comes back short."""
        for i in range(5):
            self.create(f"room-{i}")
        self.clock.advance(HOUR)
        self.reaper_with(batch=2).start()
        self.assertEqual(self.store.closing, [2, 2, 2])
        self.assertEqual({self.stored(f"room-{i}").state for i in range(5)}, {"closed"})

    def test_unavailable_logged(self) -> None:
        """
        A run that finds the database unavailable logs one warning, without a traceback;
        the next run does the work.
        """
        self.create()
        self.clock.advance(HOUR)
        self.store.trouble.append(Unavailable("The database is unavailable."))
        with capturedLogs() as events:
            self.reaper.start()
        [logged] = [e for e in events if e.get("log_namespace") == "tmd.reaper.Reaper"]
        self.assertEqual(logged["log_level"], LogLevel.warn)
        self.assertNotIn("log_failure", logged)
        self.assertIn("The database is unavailable.", formatEvent(logged))
        self.assertEqual(self.stored("physics-101").state, "open")
        self.clock.advance(INTERVAL)
        self.assertEqual(self.stored("physics-101").state, "closed")

    def test_error_logged(self) -> None:
        """Any other failure is logged with its traceback; the loop goes on."""
        self.create()
        self.clock.advance(HOUR)
        self.store.trouble.append(RuntimeError("boom"))
        self.reaper.start()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.stored("physics-101").state, "closed")

    def test_no_overlap(self) -> None:
        """While a run is slow, no other starts; the next comes at the interval after it ends."""
        self.create()
        self.clock.advance(HOUR)
        slow: Deferred[None] = Deferred()
        self.store.trouble.append(slow)
        self.reaper.start()
        self.clock.pump([INTERVAL] * 5)
        self.assertEqual(len(self.store.closing), 1)
        slow.callback(None)
        self.assertEqual(self.stored("physics-101").state, "closed")
        self.assertEqual(len(self.store.closing), 1)
        self.clock.advance(INTERVAL)
        self.assertEqual(len(self.store.closing), 2)

    def test_stop(self) -> None:
        """Stopping cancels the next run: nothing is left scheduled."""
        self.reaper.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertIsNone(resolve(self, self.reaper.stop()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_during_run(self) -> None:
        """Stopping during a run waits for its batch to end, and starts no more batches."""
        for i in range(3):
            self.create(f"room-{i}")
        self.clock.advance(HOUR)
        slow: Deferred[None] = Deferred()
        self.store.trouble.append(slow)
        reaper = self.reaper_with(batch=1)
        reaper.start()
        stopped = reaper.stop()
        self.assertNoResult(stopped)
        slow.callback(None)
        resolve(self, stopped)
        self.assertEqual(self.store.closing, [1])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ReaperLiveTests(TestCase):
    """What real websocket and HTTP clients see of the reaper's work."""

    async def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.server = await start_server(self, clock=self.clock)
        self.http = self.server.http
        reaper = Reaper(self.server.chat, self.clock, PURGE_AFTER)
        reaper.start()
        self.addCleanup(reaper.stop)

    def run_for(self, seconds: float) -> None:
        self.clock.pump([INTERVAL] * round(seconds / INTERVAL))

    async def test_closed_then_gone(self) -> None:
        """A live client sees its room close at expiry, then its socket closes with 4404."""
        tokens = await self.server.room_with("physics-101", "ada", lifetime=HOUR)
        code, _ = await self.http.call("POST", f"{ROOM}/messages", {"body": "hi"},
                                       token=tokens["ada"])
        self.assertEqual(code, 201)
        client = await connect(self.server.port, f"{ROOM}/live?token={tokens['ada']}")
        await client.wait_for(count("message", 1))
        self.run_for(HOUR)
        frames = await client.wait_for(count("room", 1))
        self.assertEqual(frames[-1]["room"]["state"], "closed")
        code, room = await self.http.call("GET", ROOM)
        self.assertEqual((code, room["state"]), (200, "closed"))
        self.run_for(PURGE_AFTER)
        self.assertEqual(await client.closed, 4404)
        for path in (ROOM, f"{ROOM}/messages"):
            code, error = await self.http.call("GET", path)
            self.assertEqual((code, error["error"]["code"]), (404, "not_found"), path)

    async def test_extended_by_patch(self) -> None:
        """A room extended with PATCH before it expires stays open until its new end."""
        tokens = await self.server.room_with("physics-101", lifetime=HOUR)
        client = await connect(self.server.port, f"{ROOM}/live")
        await client.wait_for(count("welcome", 1))
        self.run_for(HOUR / 2)
        code, _ = await self.http.call("PATCH", ROOM, {"lifetime": 2 * HOUR},
                                       token=tokens["owner"])
        self.assertEqual(code, 200)
        self.run_for(HOUR)
        code, room = await self.http.call("GET", ROOM)
        self.assertEqual((code, room["state"]), (200, "open"))
        self.run_for(HOUR / 2)
        frames = await client.wait_for(count("room", 2))
        self.assertEqual([f["room"]["state"] for f in frames if f["type"] == "room"],
                         ["open", "closed"])


class PostgresReaperTests(TestCase):
    """Two daemons, each with a reaper, on one PostgreSQL database."""

    async def setUp(self) -> None:
        self.url = fresh_schema(self)
        self.clock = Clock()
        self.clock.advance(START)
        self.stores: list[PostgresStore] = []
        self.chats: list[Chat] = []
        self.hubs: list[Hub] = []
        for _ in range(2):
            store = PostgresStore(self.url, reactor, 2)
            await store.open()
            self.addCleanup(store.close)
            hub = Hub(Clock())
            bus = PostgresBus(store, hub, Clock())
            await bus.start()
            self.addCleanup(bus.stop)
            chat = Chat(store, hub, self.clock, in_thread_now, bus)
            reaper = Reaper(chat, self.clock, PURGE_AFTER)
            reaper.start()
            self.addCleanup(reaper.stop)
            self.stores.append(store)
            self.chats.append(chat)
            self.hubs.append(hub)
        await self.runs_done()

    async def runs_done(self) -> None:
        """Wait until both reapers have finished their run and wait for the next."""
        await eventually(lambda: len(self.clock.getDelayedCalls()) == 2)

    async def test_across_daemons(self) -> None:
        """Subscribers on both daemons hear once that the room closed, then that it is gone."""
        room, _ = await self.chats[0].create_room({"name": "physics-101", "lifetime": HOUR})
        recorders = [Recorder(), Recorder()]
        for hub, recorder in zip(self.hubs, recorders, strict=True):
            hub.subscribe(room.id, recorder)
        self.clock.advance(HOUR)
        await self.runs_done()
        await eventually(lambda: all(changes(r) == [("room", "closed")] for r in recorders))
        self.clock.advance(PURGE_AFTER)
        await self.runs_done()
        await eventually(lambda: all(len(changes(r)) == 2 for r in recorders))
        self.assertEqual([changes(r) for r in recorders],
                         [[("room", "closed"), ("gone", "not_found")]] * 2)
        self.assertIsNone(await self.stores[1].room("physics-101"))
