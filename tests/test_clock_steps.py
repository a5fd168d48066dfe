"""
The wall clock steps: it jumps back an hour, or forward a day (a bad NTP server, an
operator's C{date -s}, a VM resumed). tmd reads time from its injected clock, which
in production is the reactor's wall clock; here a L{Clock} is stepped instead.

- Rate limits: a step back neither drains a bucket nor asks for a negative or
  hour-long wait; a step forward refills buckets, never past their burst.
- Expiry: a room closes when the clock reads its C{expires_at}, never earlier; a step
  back only delays that; a step forward closes what it passes and deletes nothing
  before C{purge_after}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import ImmediateReactor, in_thread_now, open_store, reject, resolve
from tests.test_hub import Recorder
from tests.test_reaper import changes
from tmd.chat import Chat
from tmd.config import DEFAULT_PURGE_AFTER
from tmd.errors import RateLimited, RoomClosed
from tmd.hub import Hub
from tmd.limits import Bucket, Rate
from tmd.model import Room
from tmd.reaper import INTERVAL, Reaper

START = 1_764_000_000.0
HOUR = 3600
DAY = 86_400


class RateLimitStepTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = ImmediateReactor()
        self.clock.advance(START)
        self.bucket = Bucket(Rate(10, 15), self.clock, "posts")  # one back every 1.5 s

    def spend(self, n: int, key: str = "ada") -> None:
        for _ in range(n):
            self.bucket.take(key)

    def refused(self, key: str = "ada") -> int:
        """The Retry-After of a refused take."""
        try:
            self.bucket.take(key)
        except RateLimited as e:
            assert e.retry_after is not None
            return e.retry_after
        raise AssertionError("the take was not refused")

    def test_step_back_an_hour(self) -> None:
        """
        After a step back, a spent bucket asks for the usual short wait (not an hour),
        and refills from then on at its rate: it is not stuck until the clock catches up.
        """
        self.spend(10)
        self.clock.rightNow -= HOUR
        self.assertEqual(self.refused(), 2)  # ceil(1.5 s): the wait before the step
        self.clock.advance(1.5)
        self.spend(1)
        self.assertEqual(self.refused(), 2)
        self.clock.advance(15)
        self.spend(10)  # a full burst again, a period after the step

    def test_step_back_with_tokens_left(self) -> None:
        """A bucket with tokens keeps them across a step back."""
        self.spend(4)
        self.clock.rightNow -= HOUR
        self.spend(6)
        self.assertEqual(self.refused(), 2)

    def test_step_forward_a_day(self) -> None:
        """A step forward refills a bucket to its burst, no more, and forgets idle ones."""
        self.spend(10)
        self.spend(3, key="bob")
        self.clock.advance(DAY)
        self.spend(10)
        self.assertEqual(self.refused(), 2)
        self.assertEqual(len(self.bucket), 1)  # bob's, full again, is forgotten


class ExpiryStepTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = ImmediateReactor()
        self.clock.advance(START)
        self.store = open_store(self, reactor=self.clock)
        self.hub = Hub(self.clock)
        self.chat = Chat(self.store, self.hub, self.clock, in_thread_now)
        self.reaper = Reaper(self.chat, self.clock, DEFAULT_PURGE_AFTER)
        self.addCleanup(lambda: resolve(self, self.reaper.stop()))

    def create(self, name: str, lifetime: int) -> tuple[Room, Recorder]:
        room, _ = resolve(self, self.chat.create_room({"name": name, "lifetime": lifetime}))
        recorder = Recorder()
        self.hub.subscribe(room.id, recorder)
        return room, recorder

    def state(self, name: str) -> str:
        """The room's state as clients see it (its row, or closed once expired)."""
        room = resolve(self, self.chat.room(name))
        return str(self.chat.room_json(room)["state"])

    def run_for(self, seconds: float) -> None:
        self.clock.pump([INTERVAL] * round(seconds / INTERVAL))

    def test_step_back_an_hour(self) -> None:
        """
        Half an hour into a one-hour room the clock steps back an hour: the room stays
        open (and takes posts) until the clock reads its C{expires_at}, then closes;
        its C{expires_at} never moves.
        """
        room, recorder = self.create("physics-101", HOUR)
        _, token = resolve(self, self.chat.join(room, {"nickname": "ada"}))
        self.reaper.start()
        self.run_for(HOUR / 2)
        self.clock.rightNow -= HOUR  # now START - 30 min
        self.run_for(HOUR + HOUR / 2 - INTERVAL)  # now START + 59 min
        self.assertEqual((self.state("physics-101"), changes(recorder)), ("open", []))
        resolve(self, self.chat.post("physics-101", token, {"body": "still open"}))
        self.assertEqual(resolve(self, self.chat.room("physics-101")).expires_at,
                         room.expires_at)
        self.run_for(2 * INTERVAL)  # past START + 1 h: the reaper has run since
        self.assertEqual((self.state("physics-101"), changes(recorder)),
                         ("closed", [("room", "closed")]))
        reject(self, self.chat.post("physics-101", token, {"body": "too late"}), RoomClosed)

    def test_step_forward_a_day(self) -> None:
        """
        The clock steps forward a day: the next run closes the rooms whose
        C{expires_at} it passed (and only those), and deletes none: deletion waits
        C{purge_after} (a week) past expiry.
        """
        _, on_short = self.create("short", HOUR)
        long, on_long = self.create("long", 2 * DAY)
        self.reaper.start()
        self.clock.advance(DAY)  # the overdue run runs at once
        self.assertEqual(changes(on_short), [("room", "closed")])
        self.assertEqual((self.state("short"), self.state("long"), changes(on_long)),
                         ("closed", "open", []))
        self.run_for(DEFAULT_PURGE_AFTER - DAY)  # a week after the short room's expiry
        self.assertEqual(changes(on_short), [("room", "closed")])
        self.assertEqual(self.state("long"), "closed")  # it expired on the way, by the clock
        self.run_for(HOUR + INTERVAL)
        self.assertEqual(changes(on_short), [("room", "closed"), ("gone", "not_found")])
        self.assertIsNotNone(resolve(self, self.store.room(long.name)))
