"""
The door of the listening port: how many connections, from where, and how slowly.

L{Guard} wraps the web factory (HTTP and the websockets it upgrades to). It refuses
a connection past the limit in total or from one client address (IPv6 by /64; the
trusted proxies are counted in the total only) with a C{503} and C{Retry-After}, and
gives each connection C{header_timeout} seconds to send its first request's headers,
so that clients trickling half-sent requests (slowloris) hold nothing for long.
Silence between requests is the web site's idle timeout. At stop, L{Guard.close_http}
closes each HTTP connection once it has answered the request it holds.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from tmd.limits import NO_PROXIES, TrustedProxies, address_key

HEADERS_END = b"\r\n\r\n"
MAX_HEADERS = 16384
"""Twisted's own limit for a request line and headers; past it, it answers 400 itself."""

BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: application/json"
        b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s")
TOO_SLOW = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json"
            b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s")


def _response(template: bytes, code: str, message: str) -> bytes:
    body = b'{"error":{"code":"%s","message":"%s"}}' % (code.encode(), message.encode())
    return template % (len(body), body)


class Refused(Protocol):
    """Says the daemon is busy, and hangs up."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(_response(
            BUSY, "unavailable", "Too many connections: try again in a few seconds."))
        self.transport.loseConnection()


class GuardedConnection(ProtocolWrapper):
    factory: Guard

    def __init__(self, factory: Guard, wrapped: Any, key: str | None) -> None:
        super().__init__(factory, wrapped)
        self.key = key
        self._seen = b""
        self._deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._deadline = self.factory.clock.callLater(self.factory.header_timeout, self._too_slow)

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is not None:
            self._seen = (self._seen + data)[-(MAX_HEADERS + len(data)):]
            if HEADERS_END in self._seen or len(self._seen) > MAX_HEADERS:
                self._stop_deadline()
        super().dataReceived(data)
        if self.factory.stopping:
            self.close_when_answered()

    def _http_channel(self) -> Any:
        """The HTTP/1.1 channel (behind Twisted's HTTP/1.1-or-2 proxy); None for websockets."""
        channel = getattr(self.wrappedProtocol, "_channel", None)
        return channel if hasattr(channel, "requests") else None

    @property
    def http(self) -> bool:
        return self._http_channel() is not None

    def close_when_answered(self) -> None:
        """Close once the request held is answered; at once if it holds none (between two)."""
        channel = self._http_channel()
        if channel is None:
            return
        if channel.requests:
            channel.persistent = False  # the channel closes after answering
        elif self._deadline is None:  # it has sent a request before: idle
            assert self.transport is not None
            self.transport.loseConnection()

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
            self._seen = b""

    def _too_slow(self) -> None:
        self._deadline = None
        self.factory.too_slow += 1
        assert self.transport is not None
        self.transport.write(_response(TOO_SLOW, "bad_request",
                                       "The request's headers took too long to arrive."))
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_deadline()
        super().connectionLost(reason)


class Guard(WrappingFactory[GuardedConnection]):
    log = Logger()
    protocol = GuardedConnection

    def __init__(self, wrapped: IProtocolFactory, clock: IReactorTime, max_connections: int,
                 max_per_address: int, header_timeout: float,
                 trusted: TrustedProxies = NO_PROXIES) -> None:
        super().__init__(wrapped)
        self.clock = clock
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.header_timeout = header_timeout
        self.trusted = trusted
        """Proxy addresses: many clients come through them, so only the total counts them."""
        self.by_address: Counter[str] = Counter()
        self.refused = 0
        self.too_slow = 0
        self.stopping = False
        self._http_closed: Deferred[None] | None = None

    async def close_http(self, timeout: float) -> None:
        """
        At stop, once the port is closed: close each HTTP connection when it has
        answered the request it holds, at once if idle (websockets close themselves).
        Returns once all are closed, or after C{timeout} seconds.
        """
        self.stopping = True
        for connection in list(self.protocols):
            connection.close_when_answered()
        if not any(c.http for c in self.protocols):
            return
        self._http_closed = Deferred()
        try:
            await self._http_closed.addTimeout(timeout, self.clock)
        except TimeoutError:
            self.log.warn("{count} HTTP connections were still open at the end of the stop",
                          count=sum(1 for c in self.protocols if c.http))

    def buildProtocol(self, addr: IAddress) -> Protocol | None:  # type: ignore[override]
        key = None if self.trusted.trusts(addr) else address_key(addr)
        if len(self.protocols) >= self.max_connections or (
                key is not None and self.by_address[key] >= self.max_per_address):
            self.refused += 1
            return Refused()
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        if key is not None:
            self.by_address[key] += 1
        return self.protocol(self, wrapped, key)

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if p.key is not None:
            self.by_address[p.key] -= 1
            if not self.by_address[p.key]:
                del self.by_address[p.key]
        closed = self._http_closed
        if closed is not None and not any(c.http for c in self.protocols):
            self._http_closed = None
            closed.callback(None)
