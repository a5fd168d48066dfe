"""
Fake HTTP peers served on real loopback ports, closed cleanly when the test ends.

The site keeps its open connections: at cleanup they are closed and waited for,
then the port, so trial finds the reactor clean.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import IResource
from twisted.web.server import Site


class TrackedSite(Site):
    """A Site that knows its open connections."""

    def __init__(self, resource: IResource) -> None:
        super().__init__(resource)
        self.open: dict[Any, Deferred[None]] = {}
        """Each open connection's transport, and what fires once it is closed."""

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        made, lost = protocol.makeConnection, protocol.connectionLost

        def connected(transport: Any) -> None:
            self.open[transport] = Deferred()
            protocol.connectionLost = gone(transport)
            made(transport)

        def gone(transport: Any) -> Any:
            def connection_lost(reason: Failure) -> None:
                lost(reason)
                self.open.pop(transport).callback(None)

            return connection_lost

        protocol.makeConnection = connected
        return protocol

    async def close(self) -> None:
        """Close every open connection and wait until each is gone."""
        waiting = list(self.open.values())
        for transport in list(self.open):
            transport.abortConnection()
        await DeferredList(waiting)


async def listen(test: TestCase, site: TrackedSite, context_factory: Any = None) -> IListeningPort:
    """Serve C{site} on a loopback port (TLS with C{context_factory}) until C{test} ends."""
    if context_factory is None:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    else:
        port = reactor.listenSSL(  # type: ignore[attr-defined]
            0, site, context_factory, interface="127.0.0.1")

    async def close() -> None:
        await site.close()
        await port.stopListening()

    test.addCleanup(lambda: Deferred.fromCoroutine(close()))
    return port  # type: ignore[no-any-return]
