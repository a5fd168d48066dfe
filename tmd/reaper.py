"""
The reaper: a room lives until its C{expires_at}, then closes, and is deleted later.

An expired room already reads as closed (L{tmd.model.Room.state_at}); the reaper
makes it so in the database and tells its live clients (a C{room} frame), then,
C{purge_after} seconds past expiry, deletes it with its messages and closes its
sockets (4404). It works in batches, each awaited, so a backlog of rooms never
holds the reactor; daemons sharing one PostgreSQL reap together, each room once.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tmd.chat import Chat
from tmd.errors import Unavailable
from tmd.model import Room

INTERVAL = 60.0
"""Seconds between runs."""

BATCH = 100
"""Rooms closed or deleted by one statement."""


class Reaper:
    """Closes expired rooms and deletes them C{purge_after} seconds later, run after run."""

    log = Logger()

    def __init__(self, chat: Chat, clock: IReactorTime, purge_after: int,
                 interval: float = INTERVAL, batch: int = BATCH) -> None:
        self._chat = chat
        self._grace_ms = purge_after * 1000
        self._interval = interval
        self._batch = batch
        self._loop = LoopingCall(self._run)
        self._loop.clock = clock
        self._stopped: Deferred[None] = succeed(None)

    def start(self) -> None:
        """Run now, then every interval; a run that overruns delays the next, never overlaps it."""
        self._stopped = self._loop.start(self._interval, now=True).addCallback(lambda _: None)

    def stop(self) -> Deferred[None]:
        """Stop; fires once a run in progress has finished its current batch."""
        if self._loop.running:
            self._loop.stop()
        return self._stopped

    def _run(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._reap())

    async def _reap(self) -> None:
        """One run; whatever fails is logged, and the next run tries again."""
        try:
            closed = await self._in_batches(self._chat.close_expired)
            if closed:
                self.log.info("closed {count} expired rooms", count=closed)
            purged = await self._in_batches(
                lambda limit: self._chat.purge_expired(self._grace_ms, limit))
            if purged:
                self.log.info("deleted {count} expired rooms and their messages", count=purged)
        except Unavailable as e:
            self.log.warn("could not reap expired rooms (trying again in {interval:g} s): {error}",
                          interval=self._interval, error=e.message)
        except Exception:
            self.log.failure("reaping expired rooms failed")

    async def _in_batches(self, work: Callable[[int], Coroutine[Any, Any, list[Room]]]) -> int:
        """C{work(batch)} until it finds less than a batch or the reaper stops; how many in all."""
        count = 0
        while self._loop.running:
            found = len(await work(self._batch))
            count += found
            if found < self._batch:
                break
        return count
