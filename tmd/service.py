"""
The root service: children start one after another and stop in reverse.

Twisted's MultiService starts and stops its children all at once and hides
their errors; tmd's services depend on each other (the web needs the store
migrated), so the root waits for each, and logs what fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger


class Sequence(MultiService):
    """Start children in order, each after the previous one has started; stop in reverse."""

    log = Logger()

    def __init__(self) -> None:
        super().__init__()
        self.started: Deferred[None] = Deferred()

    def startService(self) -> None:
        Service.startService(self)
        Deferred.fromCoroutine(self._start()).chainDeferred(self.started)

    async def _start(self) -> None:
        for child in self:
            await maybeDeferred(child.startService)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        for child in reversed(list(self)):
            if child.running:
                try:
                    await maybeDeferred(child.stopService)
                except Exception:
                    self.log.failure("stopping {service!r} failed", service=child)


class Lifecycle(Service):
    """A service made of two asynchronous calls: one to start, one to stop."""

    def __init__(self, name: str, start: Callable[[], Any], stop: Callable[[], Any]) -> None:
        self.setName(name)
        self._start = start
        self._stop = stop

    def startService(self) -> Deferred[Any]:
        super().startService()
        return maybeDeferred(self._start)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return maybeDeferred(self._stop)

