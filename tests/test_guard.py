"""Tests for L{tmd.web.guard}: connection limits and the deadline for request headers."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.static import Data

from tests.clients import Http
from tmd.limits import TrustedProxies
from tmd.web.guard import Guard

HALF_A_REQUEST = b"GET / HTTP/1.1\r\nHost: example.org\r\n"


def site() -> Site:
    """A site without its idle timer: the guard's deadline is what is tested."""
    root = Resource()
    root.putChild(b"", Data(b"hello", "text/plain"))
    return Site(root, timeout=None)


def v4(host: str, port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


class GuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.guard = Guard(site(), self.clock, max_connections=5, max_per_address=2,
                           header_timeout=10, trusted=TrustedProxies.parse(["10.0.0.0/8"]))

    def connect(self, address: IPv4Address | IPv6Address) -> StringTransport:
        protocol = self.guard.buildProtocol(address)
        assert protocol is not None
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return transport

    def tearDown(self) -> None:
        for protocol in list(self.guard.protocols):
            protocol.connectionLost(Failure(ConnectionError()))

    def refused(self, transport: StringTransport) -> bool:
        return transport.value().startswith(b"HTTP/1.1 503") and transport.disconnecting

    def test_per_address(self) -> None:
        """Past max_per_address from one address: 503 with Retry-After; others still come in."""
        first, second = self.connect(v4("192.0.2.1")), self.connect(v4("192.0.2.1"))
        third = self.connect(v4("192.0.2.1"))
        self.assertTrue(self.refused(third))
        self.assertIn(b"Retry-After: 5", third.value())
        self.assertFalse(self.refused(self.connect(v4("192.0.2.2"))))
        self.assertFalse(first.disconnecting or second.disconnecting)
        self.assertEqual(self.guard.refused, 1)

    def test_freed(self) -> None:
        """A closed connection frees its place."""
        first = self.connect(v4("192.0.2.1"))
        self.connect(v4("192.0.2.1"))
        [protocol] = [p for p in self.guard.protocols if p.transport is first]
        protocol.connectionLost(Failure(ConnectionError()))
        self.assertFalse(self.refused(self.connect(v4("192.0.2.1"))))
        self.assertEqual(dict(self.guard.by_address), {"192.0.2.1": 2})

    def test_ipv6_network(self) -> None:
        """IPv6 clients count by /64: one site's hosts share the limit."""
        self.connect(IPv6Address("TCP", "2001:db8::1", 1))
        self.connect(IPv6Address("TCP", "2001:db8::2", 1))
        self.assertTrue(self.refused(self.connect(IPv6Address("TCP", "2001:db8::3", 1))))

    def test_total(self) -> None:
        """Past max_connections in all, everyone is refused, trusted proxies too."""
        for i in range(5):
            self.connect(v4(f"192.0.2.{i}"))
        self.assertTrue(self.refused(self.connect(v4("192.0.2.99"))))
        self.assertTrue(self.refused(self.connect(v4("10.1.2.3"))))

    def test_trusted_proxy(self) -> None:
        """A trusted proxy brings many clients: only the total limits it."""
        transports = [self.connect(v4("10.1.2.3")) for _ in range(4)]
        self.assertFalse(any(self.refused(t) for t in transports))

    def test_slow_headers(self) -> None:
        """Headers not complete after header_timeout: 408 and the connection is closed."""
        transport = self.connect(v4("192.0.2.1"))
        [protocol] = self.guard.protocols
        protocol.dataReceived(HALF_A_REQUEST)
        self.clock.advance(9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.guard.too_slow, 1)

    def test_headers_in_time(self) -> None:
        """Headers that end in time, even split across reads, leave the connection alone."""
        transport = self.connect(v4("192.0.2.1"))
        [protocol] = self.guard.protocols
        protocol.dataReceived(HALF_A_REQUEST + b"\r")
        protocol.dataReceived(b"\n")
        self.clock.advance(60)
        self.assertIn(b"200 OK", transport.value())
        self.assertNotIn(b"408", transport.value())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class Trickle(Protocol):
    """A slowloris client: half a request, then nothing."""

    def __init__(self) -> None:
        self.closed: Deferred[bytes] = Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(HALF_A_REQUEST)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(self.received)


class WatchedGuard(Guard):
    """A Guard that says when it holds so many connections."""

    def holding(self, count: int) -> Deferred[None]:
        self._count, self._holding = count, Deferred()
        self._check()
        return self._holding

    def buildProtocol(self, addr: IPv4Address) -> Protocol | None:  # type: ignore[override]
        protocol = super().buildProtocol(addr)
        self._check()
        return protocol

    def _check(self) -> None:
        waiting = getattr(self, "_holding", None)
        if waiting is not None and not waiting.called and len(self.protocols) >= self._count:
            waiting.callback(None)


class SlowlorisTests(TestCase):
    def test_others_served(self) -> Deferred[None]:
        """
        500 connections holding half-sent requests do not stop another client from
        being served; at the header deadline they are all answered 408 and closed.
        """
        return Deferred.fromCoroutine(self._others_served())

    async def _others_served(self) -> None:
        clock = Clock()
        guard = WatchedGuard(site(), clock, max_connections=1000, max_per_address=1000,
                             header_timeout=10)
        port = await TCP4ServerEndpoint(reactor, 0, backlog=600,
                                        interface="127.0.0.1").listen(guard)
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        tricklers = [Trickle() for _ in range(500)]
        await gatherResults([connectProtocol(endpoint, t) for t in tricklers])
        code, body = await Http(f"http://127.0.0.1:{port.getHost().port}").call("GET", "/")
        self.assertEqual((code, body), (200, b"hello"))
        await guard.holding(500)  # accepted: the client's connect can complete before that
        clock.advance(10)
        answers = await gatherResults([t.closed for t in tricklers])
        self.assertEqual({a[:12] for a in answers}, {b"HTTP/1.1 408"})
        self.assertEqual(guard.too_slow, 500)


class Held(Resource):
    """A resource that answers only when told: C{pending} holds its requests."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Request] = []

    def render_GET(self, request: Request) -> int:
        self.pending.append(request)
        return NOT_DONE_YET


class StopTests(SynchronousTestCase):
    def test_close_http(self) -> None:
        """
        At stop, an idle keep-alive connection is closed at once, a busy one once it
        has answered, a new one once it has sent its request and had its answer; the
        stop waits for all of them.
        """
        held = Held()
        guard = Guard(Site(held, timeout=None), Clock(), max_connections=5,
                      max_per_address=5, header_timeout=10)
        connections = []
        for port in range(3):
            protocol = guard.buildProtocol(v4("192.0.2.1", port))
            assert protocol is not None
            protocol.makeConnection(StringTransport())
            connections.append(protocol)
        idle, busy, new = connections
        idle.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        held.pending.pop().finish()
        busy.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

        stopped = Deferred.fromCoroutine(guard.close_http(5))
        self.assertTrue(idle.transport.disconnecting)  # type: ignore[union-attr]
        self.assertFalse(busy.transport.disconnecting)  # type: ignore[union-attr]
        held.pending.pop().finish()
        self.assertTrue(busy.transport.disconnecting)  # type: ignore[union-attr]
        for protocol in (idle, busy):
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertNoResult(stopped)
        new.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        held.pending.pop().finish()
        self.assertTrue(new.transport.disconnecting)  # type: ignore[union-attr]
        new.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
