"""
What one client may hold of the daemon: a subscriber that stops reading (the send
buffer limit), a dead peer (the websocket keep-alive) and a silent HTTP connection
(the idle timeout). Real loopback sockets and real Autobahn clients.
"""

from __future__ import annotations

import socket
from typing import Any

import txaio
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.clients import TIMEOUT, LiveClient, connect, count
from tests.helpers import eventually, in_thread_now, open_store
from tests.server import Server, start_server
from tmd.chat import Chat
from tmd.config import ConfigError, load
from tmd.hub import Hub
from tmd.limits import DEFAULT_MAX_SEND_BUFFER, ConnectionLimits
from tmd.web import WebService
from tmd.web.backpressure import DirectWriter
from tmd.web.live import CLOSE_TRY_AGAIN, LiveProtocol
from tmd.wire import encode

LIVE = "/api/v1/rooms/physics-101/live"
LIMIT = 64 * 1024
BODY = "x" * 1000
MOST_POSTS = 3000
"""Posts after which a client that does not read must have been closed."""


def seqs(client: LiveClient) -> list[int]:
    return [m["seq"] for m in client.messages()]


def tcp(protocol: LiveProtocol) -> Any:
    """The server's TCP transport under C{protocol} (under the Guard's wrapper)."""
    assert protocol.transport is not None
    return protocol.transport.transport  # type: ignore[attr-defined]


def queued(protocol: LiveProtocol) -> int:
    """The bytes the daemon holds for C{protocol}'s client: written, not yet taken by the kernel."""
    transport = tcp(protocol)
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen  # type: ignore[no-any-return]


def server_side(server: Server, client: LiveClient) -> LiveProtocol:
    """The daemon's end of C{client}'s connection."""
    assert client.transport is not None
    port = client.transport.getHost().port  # type: ignore[attr-defined]
    [protocol] = [p for p in server.web.live.connections
                  if p.transport is not None and p.transport.getPeer().port == port]  # type: ignore[attr-defined]
    return protocol


def stop_reading(server: Server, client: LiveClient) -> LiveProtocol:
    """
    Make C{client} stop reading, with small kernel buffers on both ends so that the
    daemon's own buffer fills after a few hundred messages; its end of the connection.
    """
    protocol = server_side(server, client)
    assert client.transport is not None
    client.transport.getHandle().setsockopt(  # type: ignore[attr-defined]
        socket.SOL_SOCKET, socket.SO_RCVBUF, 131072)
    tcp(protocol).getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    client.transport.pauseProducing()  # type: ignore[attr-defined]
    return protocol


class SlowConsumerTests(TestCase):
    timeout = 60

    async def start(self) -> tuple[Server, dict[str, str], LiveClient, LiveClient]:
        """
        A server with a 64 KiB limit, and two clients of one room: one fast, one slow
        (bob); the tokens.
        """
        server = await start_server(self, connections=ConnectionLimits(max_send_buffer=LIMIT))
        tokens = await server.room_with("physics-101", "ada", "bob", max_length=1000)
        fast = await connect(server.port, LIVE + "?since=0")
        slow = await connect(server.port, LIVE + f"?since=0&token={tokens['bob']}")
        for client in (fast, slow):
            await client.wait_for(count("welcome", 1))
            self.addCleanup(lambda c=client: c.transport and c.transport.abortConnection())
        return server, tokens, fast, slow

    async def fill(self, server: Server, token: str, fast: LiveClient,
                   slow: LiveProtocol) -> int:
        """
        Post, one message at a time, until the daemon closes C{slow}: the fast client
        has each before the next is posted, and the daemon never holds more than the
        limit beyond its transport's own buffer (one frame more at most). The posts made.
        """
        frame = len(BODY) + 200
        bound = LIMIT + tcp(slow).bufferSize + frame
        most = 0
        for n in range(1, MOST_POSTS):
            await server.chat.post("physics-101", token, {"body": BODY})
            await fast.wait_for(count("message", n))
            most = max(most, queued(slow))
            self.assertLessEqual(queued(slow), bound)
            if slow.state != WebSocketProtocol.STATE_OPEN:
                self.assertGreater(most, LIMIT)  # it did fill up before it was closed
                return n
        raise AssertionError(f"still open after {MOST_POSTS} posts; {queued(slow)} bytes queued")

    async def test_closed_with_1013_and_resumes(self) -> None:
        """
        A subscriber that stops reading is closed with 1013 once the limit is passed,
        logged (without its token) and counted; the others get every message at
        once meanwhile; it reconnects with C{since} and misses nothing.
        """
        server, tokens, fast, slow = await self.start()
        logged: list[LogEvent] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        protocol = stop_reading(server, slow)
        posted = await self.fill(server, tokens["ada"], fast, protocol)
        held = queued(protocol)
        for n in range(posted + 1, posted + 6):  # the room goes on; nothing more waits for it
            await server.chat.post("physics-101", tokens["ada"], {"body": f"after {n}"})
            await fast.wait_for(count("message", n))
        self.assertLessEqual(queued(protocol), held)
        self.assertEqual(seqs(fast), list(range(1, posted + 6)))
        self.assertEqual(
            server.metrics.registry.get_sample_value("tmd_slow_consumers_dropped_total"), 1)
        [line] = [formatEvent(e) for e in logged if "stopped reading" in formatEvent(e)]
        self.assertIn("physics-101", line)
        self.assertNotIn(tokens["bob"], line)

        assert slow.transport is not None
        slow.transport.resumeProducing()  # type: ignore[attr-defined]
        code = await slow.closed.addTimeout(TIMEOUT, reactor)
        self.assertEqual(code, CLOSE_TRY_AGAIN)
        received = seqs(slow)
        self.assertEqual(received, list(range(1, len(received) + 1)))
        self.assertLess(len(received), posted)

        again = await connect(server.port, LIVE + f"?since={received[-1]}")
        await again.wait_for(count("message", posted + 5 - len(received)))
        self.assertEqual(received + seqs(again), list(range(1, posted + 6)))
        for client in (again, fast):
            client.sendClose()
            await client.closed

    async def test_dropped_when_it_never_reads(self) -> None:
        """
        A subscriber that reads neither its messages nor the close is dropped at the
        close handshake timeout (5 s): its connection, and what waited for it, are gone.
        """
        clock = Clock()
        self.patch(txaio.config, "loop", clock)  # Autobahn's timers
        server, tokens, fast, slow = await self.start()
        protocol = stop_reading(server, slow)
        await self.fill(server, tokens["ada"], fast, protocol)
        clock.advance(4)
        self.assertFalse(tcp(protocol).disconnected)
        clock.advance(1)
        self.assertTrue(protocol.droppedByMe)
        await eventually(lambda: tcp(protocol).disconnected)
        await eventually(lambda: server.web.live.connections == {server_side(server, fast)})
        self.assertIsNone(protocol._buffer.ready())  # a catch-up waiting on it goes on, and ends
        room = await server.chat.room("physics-101")
        self.assertEqual(server.hub.local_online(room.id), 1)


class KeepAliveTests(TestCase):
    async def test_dead_peer(self) -> None:
        """
        Every 25 s a ping: a peer that sends no pong within 30 s (it reads nothing,
        a pulled cable) is dropped; one that answers stays.
        """
        clock = Clock()
        self.patch(txaio.config, "loop", clock)  # Autobahn's timers
        server = await start_server(self)
        await server.room_with("physics-101")
        alive = await connect(server.port, LIVE)
        dead = await connect(server.port, LIVE)
        await dead.wait_for(count("welcome", 1))
        self.addCleanup(lambda: dead.transport and dead.transport.abortConnection())
        alive_end, dead_end = server_side(server, alive), stop_reading(server, dead)
        clock.advance(25)
        await eventually(lambda: alive_end.autoPingTimeoutCall is None)  # its pong came
        self.assertIsNotNone(dead_end.autoPingTimeoutCall)
        clock.advance(30)
        self.assertEqual((dead_end.state, dead_end.wasNotCleanReason), (
            WebSocketProtocol.STATE_CLOSED,
            "WebSocket ping timeout (peer did not respond with pong in time)"))
        await eventually(lambda: server.web.live.connections == {alive_end})
        self.assertEqual(alive_end.state, WebSocketProtocol.STATE_OPEN)
        alive.sendClose()
        await alive.closed


class IdleTimeoutTests(SynchronousTestCase):
    def test_idle_connection_closed(self) -> None:
        """An HTTP connection that sends no request after its last is closed at --idle-timeout."""
        store = open_store(self)
        hub = Hub(Clock())
        clock = MemoryReactorClock()
        web = WebService(TCP4ServerEndpoint(clock, 0), Chat(store, hub, Clock(), in_thread_now),
                         store, hub, clock, connections=ConnectionLimits(idle_timeout=30))
        protocol = web.guard.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET /api/v1/rooms/- HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404"))
        clock.advance(29)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_options(self) -> None:
        """--idle-timeout and --max-send-buffer (TOML idle_timeout, max_send_buffer), checked."""
        default = load({}).connections
        self.assertEqual((default.idle_timeout, default.max_send_buffer),
                         (60, DEFAULT_MAX_SEND_BUFFER))
        chosen = load({"idle-timeout": "5", "max-send-buffer": "65536"}).connections
        self.assertEqual((chosen.idle_timeout, chosen.max_send_buffer), (5, 65536))
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("idle_timeout = 120\nmax_send_buffer = 4194304\n")
        chosen = load({"config": path}).connections
        self.assertEqual((chosen.idle_timeout, chosen.max_send_buffer), (120, 4194304))
        for options in ({"max-send-buffer": "0"}, {"max-send-buffer": "2GiB"},
                        {"idle-timeout": "0"}, {"idle-timeout": "3601"}):
            with self.assertRaises(ConfigError) as raised:
                load(options)
            self.assertIn(next(iter(options)).replace("-", "_"), str(raised.exception))



class DirectWriterTests(TestCase):
    async def test_first_frame_of_a_turn_straight_to_the_socket(self) -> None:
        """
        A connection's first frame in a reactor turn goes to its socket at once; the
        next ones that turn wait in its buffer, to go out together; the client gets them
        all, in order. What is not a TCP connection is written to as usual.
        """
        server = await start_server(self)
        await server.room_with("physics-101")
        client = await connect(server.port, LIVE)
        await client.wait_for(count("welcome", 1))
        protocol = server_side(server, client)
        await eventually(lambda: queued(protocol) == 0)
        clock = Clock()
        writer = DirectWriter(clock)
        frames = [server.web.live.prepareMessage(encode({"type": "presence", "online": n}))
                  for n in (7, 8, 9)]
        writer.write(protocol.transport, frames[0].payloadHybi)
        self.assertEqual(queued(protocol), 0)  # the kernel has it
        writer.write(protocol.transport, frames[1].payloadHybi)
        self.assertEqual(queued(protocol), len(frames[1].payloadHybi))  # waits for the turn
        clock.advance(0)  # the next turn
        await eventually(lambda: queued(protocol) == 0)
        writer.write(protocol.transport, frames[2].payloadHybi)
        self.assertEqual(queued(protocol), 0)
        await client.wait_for(lambda frames: [f.get("online") for f in frames
                                              if f.get("online", 0) > 1] == [7, 8, 9])
        other = StringTransport()
        writer.write(other, b"frame")
        self.assertEqual(other.value(), b"frame")
        client.sendClose()
        await client.closed
