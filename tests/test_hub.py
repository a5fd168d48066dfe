"""Tests for L{tmd.hub}: fan-out to a room's subscribers, and coalesced presence."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tmd.hub import PRESENCE_INTERVAL, Hub
from tmd.model import Event


class Recorder:
    """A subscriber that keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def deliver(self, event: Event) -> None:
        self.events.append(event)

    def frames(self) -> list[dict[str, object]]:
        return [json.loads(event.frame) for event in self.events]

    def presence(self) -> list[int]:
        return [f["online"] for f in self.frames() if f["type"] == "presence"]  # type: ignore[misc]


class Broken:
    """A subscriber whose delivery always fails."""

    def deliver(self, event: Event) -> None:
        1 / 0  # noqa: B018 - the point is the ZeroDivisionError


def event(room_id: int, text: str = "hello") -> Event:
    return Event(room_id=room_id, frame=json.dumps({"type": "test", "text": text}).encode())


class PublishTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.hub = Hub(self.clock)

    def test_publish_to_room(self) -> None:
        """An event reaches every subscriber of its room, and only those."""
        a, b, other = Recorder(), Recorder(), Recorder()
        self.hub.subscribe(1, a)
        self.hub.subscribe(1, b)
        self.hub.subscribe(2, other)
        sent = event(1)
        self.hub.publish(sent)
        self.assertEqual((a.events, b.events, other.events), ([sent], [sent], []))

    def test_publish_no_subscribers(self) -> None:
        """Publishing to a room nobody watches does nothing and fails nothing."""
        watcher = Recorder()
        self.hub.subscribe(1, watcher)
        self.hub.publish(event(7))
        self.assertEqual(watcher.events, [])

    def test_publish_order(self) -> None:
        """A subscriber gets events in the order they were published."""
        watcher = Recorder()
        self.hub.subscribe(1, watcher)
        for text in ("one", "two", "three"):
            self.hub.publish(event(1, text))
        self.assertEqual([f["text"] for f in watcher.frames()], ["one", "two", "three"])

    def test_unsubscribe(self) -> None:
        """After unsubscribing, a subscriber gets nothing more; the others still do."""
        leaving, staying = Recorder(), Recorder()
        self.hub.subscribe(1, leaving)
        self.hub.subscribe(1, staying)
        self.hub.unsubscribe(1, leaving)
        self.hub.publish(event(1))
        self.assertEqual((len(leaving.events), len(staying.events)), (0, 1))

    def test_unsubscribe_unknown(self) -> None:
        """Unsubscribing what was never subscribed is harmless and changes no count."""
        self.hub.subscribe(1, Recorder())
        self.hub.unsubscribe(1, Recorder())
        self.hub.unsubscribe(3, Recorder())
        self.assertEqual((self.hub.online(1), self.hub.online(3)), (1, 0))

    def test_failing_subscriber(self) -> None:
        """A subscriber that raises is logged and stops no one else."""
        before, after = Recorder(), Recorder()
        self.hub.subscribe(1, before)
        self.hub.subscribe(1, Broken())
        self.hub.subscribe(1, after)
        self.hub.publish(event(1))
        self.assertEqual((len(before.events), len(after.events)), (1, 1))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_online(self) -> None:
        """C{online} counts a room's subscribers."""
        first, second = Recorder(), Recorder()
        self.hub.subscribe(1, first)
        self.hub.subscribe(1, second)
        self.hub.subscribe(2, Recorder())
        self.assertEqual((self.hub.online(1), self.hub.online(2), self.hub.online(3)), (2, 1, 0))
        self.hub.unsubscribe(1, first)
        self.hub.unsubscribe(1, second)
        self.assertEqual((self.hub.online(1), self.hub.online(2)), (0, 1))

    def test_subscribe_twice(self) -> None:
        """Subscribing the same subscriber twice counts and delivers once."""
        watcher = Recorder()
        self.hub.subscribe(1, watcher)
        self.hub.subscribe(1, watcher)
        self.hub.publish(event(1))
        self.assertEqual((self.hub.online(1), len(watcher.events)), (1, 1))


class PresenceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.hub = Hub(self.clock)

    def test_coalesced(self) -> None:
        """Three arrivals within the interval make one presence frame each, saying 3."""
        watchers = [Recorder() for _ in range(3)]
        for watcher in watchers:
            self.hub.subscribe(1, watcher)
        self.assertEqual([w.events for w in watchers], [[], [], []])
        self.clock.advance(PRESENCE_INTERVAL)
        for watcher in watchers:
            self.assertEqual([e.frame for e in watcher.events], [b'{"type":"presence","online":3}'])
            self.assertIsNone(watcher.events[0].message)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_not_before_interval(self) -> None:
        """No presence frame is sent before the interval has passed."""
        watcher = Recorder()
        self.hub.subscribe(1, watcher)
        self.clock.advance(PRESENCE_INTERVAL * 0.9)
        self.assertEqual(watcher.events, [])
        self.clock.advance(PRESENCE_INTERVAL * 0.1)
        self.assertEqual(watcher.presence(), [1])

    def test_unchanged(self) -> None:
        """A count back to its announced value within the interval announces nothing."""
        first, second = Recorder(), Recorder()
        self.hub.subscribe(1, first)
        self.clock.advance(PRESENCE_INTERVAL)
        self.hub.subscribe(1, second)
        self.hub.unsubscribe(1, second)
        self.clock.advance(PRESENCE_INTERVAL)
        self.assertEqual(first.presence(), [1])
        self.assertEqual(second.events, [])

    def test_departure(self) -> None:
        """A departure is announced to those who stay."""
        staying, leaving = Recorder(), Recorder()
        self.hub.subscribe(1, staying)
        self.hub.subscribe(1, leaving)
        self.clock.advance(PRESENCE_INTERVAL)
        self.hub.unsubscribe(1, leaving)
        self.clock.advance(PRESENCE_INTERVAL)
        self.assertEqual(staying.presence(), [2, 1])
        self.assertEqual(leaving.presence(), [2])

    def test_empty_room_forgotten(self) -> None:
        """When everyone leaves, the next arrival is announced again, even at the same count."""
        first, second = Recorder(), Recorder()
        self.hub.subscribe(1, first)
        self.clock.advance(PRESENCE_INTERVAL)
        self.hub.unsubscribe(1, first)
        self.clock.advance(PRESENCE_INTERVAL)
        self.hub.subscribe(1, second)
        self.clock.advance(PRESENCE_INTERVAL)
        self.assertEqual((first.presence(), second.presence()), ([1], [1]))

    def test_per_room(self) -> None:
        """Presence is counted and announced per room."""
        one, two = Recorder(), Recorder()
        self.hub.subscribe(1, one)
        self.hub.subscribe(2, two)
        self.hub.subscribe(2, Recorder())
        self.clock.advance(PRESENCE_INTERVAL)
        self.assertEqual((one.presence(), two.presence()), ([1], [2]))

    def test_stop(self) -> None:
        """C{stop()} cancels pending announcements: nothing is left on the clock or sent."""
        watcher = Recorder()
        self.hub.subscribe(1, watcher)
        self.hub.subscribe(2, Recorder())
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.hub.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(PRESENCE_INTERVAL)
        self.assertEqual(watcher.events, [])


class RemotePresenceTests(SynchronousTestCase):
    """Counts from other daemons (through the Bus) add to this one's."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.hub = Hub(self.clock)
        self.told: list[tuple[int, int]] = []
        self.hub.on_local_presence = lambda room, count: self.told.append((room, count))
        self.watcher = Recorder()
        self.hub.subscribe(1, self.watcher)
        self.clock.advance(PRESENCE_INTERVAL)

    def test_local_counts_told(self) -> None:
        """Changes of this daemon's own counts are told to the Bus, coalesced, and only those."""
        self.hub.subscribe(1, Recorder())
        self.hub.subscribe(1, Recorder())
        self.hub.remote_presence("b", {1: 5}, complete=False)
        self.clock.advance(PRESENCE_INTERVAL)
        self.assertEqual(self.told, [(1, 1), (1, 3)])

    def test_added_up(self) -> None:
        """C{online} and the presence frame count every daemon's subscribers."""
        self.hub.remote_presence("b", {1: 2, 7: 4}, complete=False)
        self.hub.remote_presence("c", {1: 3}, complete=False)
        self.clock.advance(PRESENCE_INTERVAL)
        self.assertEqual((self.hub.local_online(1), self.hub.online(1), self.hub.online(7)),
                         (1, 6, 4))
        self.assertEqual(self.watcher.presence(), [1, 6])

    def test_complete(self) -> None:
        """A complete report replaces a daemon's counts: rooms it leaves out are empty there."""
        self.hub.remote_presence("b", {1: 2, 7: 4}, complete=False)
        self.hub.remote_presence("b", {7: 1}, complete=True)
        self.assertEqual((self.hub.online(1), self.hub.online(7)), (1, 1))

    def test_zero(self) -> None:
        """A count of 0 removes the daemon from the room."""
        self.hub.remote_presence("b", {1: 2}, complete=False)
        self.hub.remote_presence("b", {1: 0}, complete=False)
        self.assertEqual(self.hub.online(1), 1)

    def test_forget(self) -> None:
        """A daemon that says goodbye no longer counts."""
        self.hub.remote_presence("b", {1: 2}, complete=False)
        self.hub.forget("b")
        self.clock.advance(PRESENCE_INTERVAL)
        self.assertEqual(self.hub.online(1), 1)
        self.assertEqual(self.watcher.presence(), [1])

    def test_expire(self) -> None:
        """A daemon silent for longer than C{max_age} is forgotten; one heard lately is kept."""
        self.hub.remote_presence("old", {1: 2}, complete=True)
        self.clock.advance(50)
        self.hub.remote_presence("new", {1: 3}, complete=True)
        self.hub.expire(40)
        self.assertEqual(self.hub.online(1), 4)

    def test_no_local_subscribers(self) -> None:
        """Remote counts for a room nobody here watches announce nothing and keep no frame state."""
        self.hub.remote_presence("b", {9: 2}, complete=False)
        self.clock.advance(PRESENCE_INTERVAL)
        self.assertEqual(self.watcher.presence(), [1])
        self.assertEqual(self.hub.rooms(), [1])
