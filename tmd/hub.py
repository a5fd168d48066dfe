"""
The Hub: which live subscribers each room has, and fan-out to them.

It knows nothing of HTTP or websockets: a subscriber is anything with a
C{deliver(event)} method. Presence (how many are online) is published here too,
coalesced so that a crowd arriving at once costs a few frames a second, not one
per arrival. With several daemons, the Bus tells the Hub the other daemons'
counts (L{Hub.remote_presence}) and hears of this one's (C{on_local_presence}).

Some frames are for some subscribers only (a held post's author, the owner's
sockets): each subscriber says who it is (a L{Viewer}) and an event's audience
picks. Changes to a message (votes) are throttled here too (L{Hub.throttle}).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from tmd.model import ANYONE, Event, Viewer
from tmd.wire import presence_frame

PRESENCE_INTERVAL = 0.5
"""Seconds over which presence changes in a room are coalesced into one frame."""

UPDATE_INTERVAL = 0.5
"""Seconds between two throttled updates of one thing (a message's vote count)."""


class Subscriber(Protocol):
    def deliver(self, event: Event) -> None: ...


class Hub:
    log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._rooms: dict[int, dict[Subscriber, Viewer]] = {}
        self._announced: dict[int, int] = {}
        self._presence_calls: dict[int, IDelayedCall] = {}
        self._told: dict[int, int] = {}
        self._remote: dict[int, dict[str, int]] = {}
        self._heard: dict[str, float] = {}
        self.on_local_presence: Callable[[int, int], object] = lambda room_id, count: None
        """Called, coalesced, when the number of this daemon's subscribers of a room changes."""
        self.on_online: Callable[[int, int], object] = lambda room_id, online: None
        """Called with the number online in a room (every daemon's) when it is announced."""
        self._throttled: dict[Hashable, IDelayedCall] = {}
        self._again: dict[Hashable, Callable[[], object]] = {}

    def subscribe(self, room_id: int, subscriber: Subscriber, viewer: Viewer = ANYONE) -> None:
        """Deliver the room's events to C{subscriber}; those with an audience only if it is in."""
        self._rooms.setdefault(room_id, {})[subscriber] = viewer
        self._presence_changed(room_id)

    def unsubscribe(self, room_id: int, subscriber: Subscriber) -> None:
        subscribers = self._rooms.get(room_id, {})
        if subscriber in subscribers:
            del subscribers[subscriber]
            if not subscribers:
                del self._rooms[room_id]
            self._presence_changed(room_id)

    def local_online(self, room_id: int) -> int:
        """This daemon's subscribers of the room."""
        return len(self._rooms.get(room_id, ()))

    def online(self, room_id: int) -> int:
        """Everyone in the room, on every daemon."""
        return self.local_online(room_id) + sum(self._remote.get(room_id, {}).values())

    def rooms(self) -> list[int]:
        """The rooms that have subscribers here."""
        return list(self._rooms)

    def remote_presence(self, origin: str, counts: Mapping[int, int], complete: bool) -> None:
        """
        Another daemon's subscriber counts; C{complete} if they are all of its rooms
        (a refresh), so that its rooms left out are empty there.
        """
        self._heard[origin] = self._clock.seconds()
        if complete:
            for room_id, by_origin in list(self._remote.items()):
                if origin in by_origin and room_id not in counts:
                    self._set_remote(room_id, origin, 0)
        for room_id, count in counts.items():
            self._set_remote(room_id, origin, count)

    def forget(self, origin: str) -> None:
        """Another daemon is gone: its subscribers are no longer online."""
        self._heard.pop(origin, None)
        for room_id, by_origin in list(self._remote.items()):
            if origin in by_origin:
                self._set_remote(room_id, origin, 0)

    def expire(self, max_age: float) -> None:
        """Forget the daemons not heard from for C{max_age} seconds."""
        now = self._clock.seconds()
        for origin, heard in list(self._heard.items()):
            if now - heard > max_age:
                self.forget(origin)

    def _set_remote(self, room_id: int, origin: str, count: int) -> None:
        by_origin = self._remote.setdefault(room_id, {})
        if by_origin.get(origin, 0) == count:
            if not by_origin:
                del self._remote[room_id]
            return
        if count > 0:
            by_origin[origin] = count
        else:
            del by_origin[origin]
            if not by_origin:
                del self._remote[room_id]
        self._presence_changed(room_id)

    def publish(self, event: Event) -> None:
        """Hand C{event} to every subscriber of its room; one failing never stops the rest."""
        audience = event.audience
        for subscriber, viewer in list(self._rooms.get(event.room_id, {}).items()):
            if audience is not None and not audience.includes(viewer):
                continue
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
        local = self.local_online(room_id)
        if self._told.get(room_id, 0) != local:
            if local:
                self._told[room_id] = local
            else:
                del self._told[room_id]
            self.on_local_presence(room_id, local)
        if not local:  # no one here to tell
            self._announced.pop(room_id, None)
            self.on_online(room_id, 0)
            return
        online = self.online(room_id)
        if self._announced.get(room_id, 0) == online:
            return
        self._announced[room_id] = online
        self.on_online(room_id, online)
        self.publish(Event(room_id=room_id, frame=presence_frame(online)))

    def throttle(self, key: Hashable, update: Callable[[], object]) -> None:
        """
        Call C{update} now, unless one for C{key} was called less than L{UPDATE_INTERVAL}
        ago: then call the latest once that interval is over. A burst of changes costs
        an update at once and one at most every interval, the last one after the burst.
        """
        if key in self._throttled:
            self._again[key] = update
            return
        self._throttled[key] = self._clock.callLater(UPDATE_INTERVAL, self._unthrottle, key)
        self._call(update)

    def _unthrottle(self, key: Hashable) -> None:
        del self._throttled[key]
        update = self._again.pop(key, None)
        if update is not None:
            self.throttle(key, update)

    def _call(self, update: Callable[[], object]) -> None:
        try:
            update()
        except Exception:
            self.log.failure("a throttled update failed")

    def stop(self) -> None:
        """Cancel pending presence announcements and updates (at shutdown)."""
        for call in [*self._presence_calls.values(), *self._throttled.values()]:
            call.cancel()
        self._presence_calls.clear()
        self._throttled.clear()
        self._again.clear()
