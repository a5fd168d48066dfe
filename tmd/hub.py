"""
The Hub: which live subscribers each room has, and fan-out to them.

It knows nothing of HTTP or websockets: a subscriber is anything with a
C{deliver(event)} method. Presence (how many are online) is published here too,
coalesced so that a crowd arriving at once costs a few frames a second, not one
per arrival.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from tmd.model import Event
from tmd.wire import presence_frame

PRESENCE_INTERVAL = 0.5
"""Seconds over which presence changes in a room are coalesced into one frame."""


class Subscriber(Protocol):
    def deliver(self, event: Event) -> None: ...


class Hub:
    log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._rooms: dict[int, dict[Subscriber, None]] = {}
        self._announced: dict[int, int] = {}
        self._presence_calls: dict[int, IDelayedCall] = {}

    def subscribe(self, room_id: int, subscriber: Subscriber) -> None:
        self._rooms.setdefault(room_id, {})[subscriber] = None
        self._presence_changed(room_id)

    def unsubscribe(self, room_id: int, subscriber: Subscriber) -> None:
        subscribers = self._rooms.get(room_id, {})
        if subscriber in subscribers:
            del subscribers[subscriber]
            if not subscribers:
                del self._rooms[room_id]
            self._presence_changed(room_id)

    def online(self, room_id: int) -> int:
        return len(self._rooms.get(room_id, ()))

    def publish(self, event: Event) -> None:
        """Hand C{event} to every subscriber of its room; one failing never stops the rest."""
        for subscriber in list(self._rooms.get(event.room_id, ())):
            try:
                subscriber.deliver(event)
            except Exception:
                self.log.failure("subscriber {subscriber!r} failed", subscriber=subscriber)

    def _presence_changed(self, room_id: int) -> None:
        if room_id not in self._presence_calls:
            self._presence_calls[room_id] = self._clock.callLater(
                PRESENCE_INTERVAL, self._announce_presence, room_id)

    def _announce_presence(self, room_id: int) -> None:
        del self._presence_calls[room_id]
        online = self.online(room_id)
        if self._announced.get(room_id, 0) == online:
            return
        if online:
            self._announced[room_id] = online
        else:
            self._announced.pop(room_id, None)
        self.publish(Event(room_id=room_id, frame=presence_frame(online)))

    def stop(self) -> None:
        """Cancel pending presence announcements (at shutdown)."""
        for call in self._presence_calls.values():
            call.cancel()
        self._presence_calls.clear()
