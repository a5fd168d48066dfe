"""Tests for L{tmd.streaming}: back-off, parsing, and a stream kept open against a fake server."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers

from tmd.streaming import (
    MAX_LINE,
    BrokenStream,
    Lines,
    RoomCap,
    Seen,
    ServerSentEvent,
    ServerSentEvents,
    Stream,
    http_delay,
    network_delay,
    rate_limit_delay,
    reset_in,
)


class BackoffTests(SynchronousTestCase):
    def test_network(self) -> None:
        """Network errors: 250 ms more each time, up to 16 s."""
        self.assertEqual([network_delay(n) for n in (1, 2, 3, 64, 65, 1000)],
                         [0.25, 0.5, 0.75, 16, 16, 16])

    def test_http(self) -> None:
        """HTTP errors: 5 s doubling, up to 320 s."""
        self.assertEqual([http_delay(n) for n in range(1, 9)] + [http_delay(100)],
                         [5, 10, 20, 40, 80, 160, 320, 320, 320])

    def test_rate_limit(self) -> None:
        """A 429 waits until the reset when it is known, else 60 s doubling (to 15 minutes)."""
        self.assertEqual([rate_limit_delay(n) for n in (1, 2, 3, 5, 40)],
                         [60, 120, 240, 900, 900])
        self.assertEqual(rate_limit_delay(3, 42.5), 42.5)
        self.assertEqual(rate_limit_delay(1, 0), 60)  # a reset in the past says nothing

    def test_reset_in(self) -> None:
        """The reset time from X's epoch seconds, Mastodon's ISO time, or Retry-After."""
        now = 1_764_000_000.0
        self.assertEqual(reset_in(Headers({"x-rate-limit-reset": ["1764000090"]}), now), 90)
        self.assertEqual(reset_in(Headers({"X-RateLimit-Reset": ["2025-11-24T16:01:00.000Z"]}),
                                  now), 60)
        self.assertEqual(reset_in(Headers({"Retry-After": ["7"]}), now), 7)
        self.assertIsNone(reset_in(Headers({"x-rate-limit-reset": ["soon"]}), now))
        self.assertIsNone(reset_in(Headers(), now))


class LinesTests(SynchronousTestCase):
    def test_split(self) -> None:
        """Records split across chunks come out whole; keep-alives (blank lines) do not."""
        lines = Lines()
        self.assertEqual(list(lines.feed(b'{"a":')), [])
        self.assertEqual(list(lines.feed(b'1}\r\n\r\n\r\n{"b"')), [b'{"a":1}'])
        self.assertEqual(list(lines.feed(b':2}\n')), [b'{"b":2}'])

    def test_too_long(self) -> None:
        """A line with no end in sight is a broken stream, not a memory leak."""
        lines = Lines()
        self.assertRaises(BrokenStream, list, lines.feed(b"x" * (MAX_LINE + 1)))


class ServerSentEventsTests(SynchronousTestCase):
    def test_events(self) -> None:
        """Fields, comments and multi-line data, split anywhere, CRLF or LF."""
        events = ServerSentEvents()
        stream = (b":thump\n\nevent: update\ndata: {\"id\":\nda" b"ta: 1}\r\nid: 7\r\n\r\n"
                  b"event: delete\ndata: 109\n\n:thump\n\ndata:plain\n\n")
        found = [event for i in range(0, len(stream), 5) for event in events.feed(stream[i:i + 5])]
        self.assertEqual(found, [ServerSentEvent("update", '{"id":\n1}', "7"),
                                 ServerSentEvent("delete", "109", "7"),
                                 ServerSentEvent("message", "plain", "7")])

    def test_too_long(self) -> None:
        """An endless event is a broken stream."""
        events = ServerSentEvents()
        line = b"data: " + b"x" * (MAX_LINE // 2) + b"\n"
        self.assertRaises(BrokenStream, list, events.feed(line * 3))


class SeenAndCapTests(SynchronousTestCase):
    def test_seen(self) -> None:
        """Duplicates are noticed among the last C{size} keys; older ones are forgotten."""
        seen = Seen(2)
        self.assertEqual([seen.add(k) for k in ("a", "b", "b", "c", "a", "c")],
                         [True, True, False, True, True, False])

    def test_cap(self) -> None:
        """At most C{limit} posts per room in any window; 0 is no cap."""
        cap = RoomCap(2, window=3600)
        self.assertEqual([cap.allow("a", t) for t in (0, 10, 20)], [True, True, False])
        self.assertTrue(cap.allow("b", 20))
        self.assertEqual([cap.allow("a", t) for t in (3600, 3609, 3610)], [True, False, True])
        cap.keep(["b"])
        self.assertTrue(cap.allow("a", 3611))
        self.assertTrue(all(RoomCap(0).allow("a", 0) for _ in range(100)))


class FakeTransport:
    def __init__(self) -> None:
        self.stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


class FakeResponse:
    """Enough of an IResponse: its body is handed to the protocol by the test."""

    def __init__(self, code: int = 200, headers: dict[str, list[str]] | None = None) -> None:
        self.code = code
        self.phrase = {200: b"OK", 401: b"Unauthorized", 429: b"Too Many Requests",
                       503: b"Service Unavailable"}.get(code, b"?")
        self.headers = Headers(headers or {})
        self.protocol: Protocol | None = None
        self.transport = FakeTransport()

    def deliverBody(self, protocol: Protocol) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)  # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        assert self.protocol is not None
        self.protocol.dataReceived(data)

    def end(self, reason: Exception | None = None) -> None:
        assert self.protocol is not None
        self.protocol.connectionLost(Failure(reason or ResponseDone()))


class Recorded:
    """A reader that keeps what it is given."""

    def __init__(self, readers: list[Recorded]) -> None:
        readers.append(self)
        self.chunks: list[bytes] = []
        self.ended = False

    def data(self, chunk: bytes) -> None:
        if chunk == b"boom":
            raise ValueError("cannot parse")
        self.chunks.append(chunk)

    def end(self) -> None:
        self.ended = True


class StreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.requests: list[Deferred[Any]] = []
        self.readers: list[Recorded] = []
        self.statuses: list[tuple[str, str | None]] = []
        self.stream = self.make()

    def make(self, **kw: Any) -> Stream:
        def connect() -> Deferred[Any]:
            self.requests.append(Deferred())
            return self.requests[-1]

        return Stream(self.clock, "test", connect, lambda: Recorded(self.readers),
                      lambda state, detail: self.statuses.append((state, detail)), **kw)

    def answer(self, response: FakeResponse) -> FakeResponse:
        self.requests[-1].callback(response)
        return response

    def connected(self) -> FakeResponse:
        return self.answer(FakeResponse())

    def test_streams(self) -> None:
        """Connecting, then connected; each connection's body goes to a new reader."""
        self.stream.start()
        self.assertEqual(self.statuses, [("connecting", None)])
        response = self.connected()
        response.send(b"one")
        response.send(b"two")
        self.assertEqual(self.statuses[-1], ("connected", None))
        self.assertEqual(self.readers[0].chunks, [b"one", b"two"])
        self.assertEqual((self.stream.connections, self.stream.reconnects), (1, 0))

    def test_stall(self) -> None:
        """
        Data, keep-alives included, keeps a stream alive; 30 s of silence drop it, and
        it reconnects after the first network back-off.
        """
        self.stream.start()
        response = self.connected()
        for _ in range(5):
            self.clock.advance(20)
            response.send(b"\r\n")
        self.clock.advance(29.9)
        self.assertFalse(response.transport.stopped)
        self.clock.advance(0.1)
        self.assertTrue(response.transport.stopped)
        self.assertEqual(self.statuses[-1], (
            "backing off", "stream lost (TimeoutError: no data for 30 s), retry in 0.25 s"))
        self.assertEqual(len(self.requests), 1)
        self.clock.advance(0.25)
        self.assertEqual((len(self.requests), self.stream.reconnects), (2, 1))
        self.connected().send(b"again")
        self.assertEqual([r.chunks for r in self.readers], [[b"\r\n"] * 5, [b"again"]])

    def test_connect_timeout(self) -> None:
        """A request that gets no answer for 30 s is given up, as a network error."""
        self.stream.start()
        self.clock.advance(30)
        self.assertTrue(self.requests[0].called)
        self.assertEqual(self.statuses[-1][0], "backing off")
        self.assertIn("cannot connect", self.statuses[-1][1] or "")

    def test_network_errors(self) -> None:
        """Failed connections back off linearly; data on a connection starts over."""
        self.stream.start()
        waits = []
        for _ in range(3):
            self.requests[-1].errback(ConnectionRefusedError())
            waits.append(self.statuses[-1][1])
            self.clock.advance(network_delay(len(self.requests)))
        self.assertEqual(waits, [
            "cannot connect (ConnectionRefusedError: Connection was refused by other side.),"
            f" retry in {w} s" for w in ("0.25", "0.5", "0.75")])
        response = self.connected()
        response.send(b"data")
        response.end(ResponseFailed([Failure(ConnectionResetError("reset"))]))
        self.assertEqual(self.statuses[-1], (
            "backing off", "stream lost (ConnectionResetError: reset), retry in 0.25 s"))

    def test_clean_end(self) -> None:
        """A stream the server ends is reconnected too (it is meant to be endless)."""
        self.stream.start()
        self.connected().end()
        self.assertEqual(self.statuses[-1], (
            "backing off", "stream lost (ConnectionError: the server ended the stream),"
            " retry in 0.25 s"))

    def test_http_errors(self) -> None:
        """HTTP errors back off exponentially from 5 s; the body is read and logged."""
        self.stream.start()
        waits = []
        for _ in range(3):
            self.answer(FakeResponse(503)).end()
            waits.append(self.statuses[-1])
            self.clock.advance(http_delay(len(self.requests)))
        self.assertEqual(waits, [("backing off", f"503, retry in {w} s") for w in (5, 10, 20)])
        self.assertEqual(len(self.requests), 4)

    def test_rate_limited(self) -> None:
        """A 429 waits for the rate limit's reset, or 60 s doubling without one."""
        self.clock.advance(1_764_000_000)
        self.stream.start()
        self.answer(FakeResponse(429, {"x-rate-limit-reset": ["1764000300"]})).end()
        self.assertEqual(self.statuses[-1], ("backing off", "429, retry in 300 s"))
        self.clock.advance(299)
        self.assertEqual(len(self.requests), 1)
        self.clock.advance(1)
        self.answer(FakeResponse(429)).end()
        self.assertEqual(self.statuses[-1], ("backing off", "429, retry in 120 s"))

    def test_unauthorized(self) -> None:
        """A 401 stops the stream for good, saying why."""
        self.stream.start()
        self.answer(FakeResponse(401)).end()
        self.assertEqual(self.statuses[-1], (
            "stopped", "401 Unauthorized: the credentials were refused; fix them and restart"))
        self.clock.advance(10_000)
        self.assertEqual(len(self.requests), 1)
        self.flushLoggedErrors()

    def test_reader_fails(self) -> None:
        """A reader that raises drops the connection, which is made again."""
        self.stream.start()
        response = self.connected()
        response.send(b"boom")
        self.assertTrue(response.transport.stopped)
        self.assertEqual(self.statuses[-1], (
            "backing off", "stream lost (ValueError: cannot parse), retry in 0.25 s"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_drop(self) -> None:
        """The source can drop a connection (the server said to); a new one follows."""
        self.stream.start()
        response = self.connected()
        self.stream.drop("operational-disconnect")
        self.assertTrue(response.transport.stopped)
        self.clock.advance(0.25)
        self.assertEqual(len(self.requests), 2)

    def test_stop(self) -> None:
        """Stopping closes the stream, or cancels a request or a wait, and that is all."""
        self.stream.start()
        response = self.connected()
        stopped = self.stream.stop()
        self.assertTrue(response.transport.stopped)
        self.successResultOf(stopped)
        for then in ("requesting", "waiting"):
            stream = self.make()
            stream.start()
            if then == "waiting":
                self.requests[-1].errback(ConnectionRefusedError())
            self.successResultOf(stream.stop())
            self.clock.advance(100)
        self.assertEqual(len(self.requests), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_polling(self) -> None:
        """With a pause, a body that ends is a whole answer: the next request follows later."""
        stream = self.make(pause=15.0)
        stream.start()
        response = self.connected()
        response.send(b"[]")
        response.end()
        self.assertTrue(self.readers[0].ended)
        self.assertEqual(self.statuses, [("connecting", None), ("polling", "every 15 s")])
        self.clock.advance(14.9)
        self.assertEqual(len(self.requests), 1)
        self.clock.advance(0.1)
        self.assertEqual((len(self.requests), stream.reconnects), (2, 0))
