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
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
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



class Listener(Service):
    """Listens on an endpoint with a factory from start to stop, and logs where."""

    log = Logger()

    def __init__(self, endpoint: IStreamServerEndpoint, factory: IProtocolFactory,
                 what: str) -> None:
        self._endpoint = endpoint
        self._factory = factory
        self._what = what
        self._port: IListeningPort | None = None

    @property
    def port(self) -> int | None:
        """The TCP port listened on (useful with C{tcp:0}), once started."""
        return getattr(self._port.getHost(), "port", None) if self._port is not None else None

    def startService(self) -> Deferred[None]:
        super().startService()
        return Deferred.fromCoroutine(self._listen())

    @property
    def where(self) -> str:
        """The address listened on, e.g. C{TCP 127.0.0.1:8080}, once started."""
        address: Any = self._port.getHost() if self._port is not None else None
        if hasattr(address, "port"):
            return f"{address.type} {address.host}:{address.port}"
        return str(address)

    async def _listen(self) -> None:
        self._port = await self._endpoint.listen(self._factory)
        self.log.info("{what} on {where}", what=self._what, where=self.where)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        """Stop listening; connections already open stay (subclasses close them)."""
        if self._port is not None:
            await maybeDeferred(self._port.stopListening)
