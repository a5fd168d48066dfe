"""
The live websocket fuzzed frame by frame, on a real connection: hypothesis writes
random JSON, wrong types, huge numbers, deep nesting, long strings, binary frames,
messages in fragments with pings between them, ping floods, and ends each
connection with a close or with one protocol violation (invalid UTF-8, an oversized
frame or message, reserved bits or opcodes, an unmasked frame, a stray continuation,
a fragmented or oversized control frame, a bad close code).

Every message is answered by exactly one C{error} or C{ack} frame, every ping by a
pong, every violation by the close code RFC 6455 gives it; nothing is logged as an
error (trial fails a test that logs one), and the daemon keeps serving others.

Hypothesis runs in a thread and hands each example to the reactor, so each
connection is real and a failing example still shrinks.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import define, field
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.clients import connect, count
from tests.server import Server, start_server
from tmd.web.live import MAX_FRAME

ROOM = "physics-101"
TIMEOUT = 5
EXAMPLES = int(os.environ.get("TMD_FUZZ_EXAMPLES", "200"))

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
NORMAL, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1002, 1007, 1009
MASK = b"\x37\xfa\x21\x3d"

log = Logger()


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
          masked: bool = True) -> bytes:
    """One client frame, as RFC 6455 section 5.2 lays it out."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if len(payload) < 126:
        head += bytes([mask_bit | len(payload)])
    elif len(payload) < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", len(payload))
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


@define
class Message:
    """A data message, sent in C{len(cuts) + 1} fragments with C{pings} after each."""

    payload: bytes
    binary: bool = False
    cuts: list[int] = field(factory=list)
    pings: int = 0

    def frames(self) -> bytes:
        bounds = [0, *sorted(c % (len(self.payload) + 1) for c in self.cuts), len(self.payload)]
        pieces = [self.payload[a:b] for a, b in itertools.pairwise(bounds)]
        out = b""
        for i, piece in enumerate(pieces):
            opcode = (BINARY if self.binary else TEXT) if i == 0 else CONTINUATION
            out += frame(opcode, piece, fin=i == len(pieces) - 1)
            out += frame(PING, b"p") * self.pings
        return out

    @property
    def sent_pings(self) -> int:
        return self.pings * (len(self.cuts) + 1)


@define
class Ending:
    """
    How a connection ends: these bytes, then the close code the server must send. A
    bad close frame is answered with the code, and as the peer's close is then taken
    for the reply, the TCP connection is aborted at once: the client may never read
    the code (C{None}).
    """

    wire: bytes
    code: int
    what: str
    may_abort: bool = False

    def codes(self) -> set[int | None]:
        return {self.code, None} if self.may_abort else {self.code}


class RawClient(Protocol):
    """
    A websocket client that writes whatever bytes it is given after the handshake,
    and reads the server's frames: text messages, pongs and the close code.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.upgraded: Deferred[None] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.messages: list[dict[str, Any]] = []
        self.pongs = 0
        self.close_code: int | None = None
        self._buffer = b""
        self._open = False
        self._waiting: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def connectionMade(self) -> None:
        assert self.transport is not None
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if not self._open:
            head, found, self._buffer = self._buffer.partition(b"\r\n\r\n")
            if not found:
                self._buffer = head
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.upgraded.errback(AssertionError(f"no upgrade: {head!r}"))
                return
            self._open = True
            self.upgraded.callback(None)
        while self._read_frame():
            pass
        for condition, waiter in [w for w in self._waiting if w[0]()]:
            self._waiting.remove((condition, waiter))
            waiter.callback(None)

    def until(self, condition: Callable[[], bool]) -> Deferred[None]:
        """Fires once C{condition()} holds (at once if it does)."""
        waiter: Deferred[None] = Deferred()
        if condition():
            waiter.callback(None)
        else:
            self._waiting.append((condition, waiter))
        return waiter.addTimeout(TIMEOUT, reactor)

    def _read_frame(self) -> bool:
        if len(self._buffer) < 2:
            return False
        opcode, length, start = self._buffer[0] & 0x0F, self._buffer[1] & 0x7F, 2
        if self._buffer[1] & 0x80:
            raise AssertionError("the server masked a frame")
        if length >= 126:
            size = 2 if length == 126 else 8
            if len(self._buffer) < 2 + size:
                return False
            length = int.from_bytes(self._buffer[2:2 + size], "big")
            start += size
        if len(self._buffer) < start + length:
            return False
        payload, self._buffer = self._buffer[start:start + length], self._buffer[start + length:]
        if opcode == TEXT:
            self.messages.append(json.loads(payload))
        elif opcode == PONG:
            self.pongs += 1
        elif opcode == CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if payload else None
            assert self.transport is not None
            self.transport.write(frame(CLOSE, payload[:2]))
            self.transport.loseConnection()
        return True

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.upgraded.called:
            self.upgraded.errback(reason or ConnectionError("lost before the upgrade"))
        self.closed.callback(None)

    def answers(self) -> int:
        """The frames that answer a message: errors and acks (not messages or presence)."""
        return sum(1 for m in self.messages if m["type"] in ("error", "ack"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20)

posts = st.fixed_dictionaries(
    {"type": st.sampled_from(["post", "POST", "ack", ""]) | json_values},
    optional={"body": st.text(max_size=300) | json_values,
              "ref": st.text(max_size=250) | json_values},
).map(lambda frame: json.dumps(frame).encode())

raw_texts = st.one_of(
    posts,
    json_values.map(lambda value: json.dumps(value).encode()),
    st.text(max_size=200).map(str.encode),  # rarely JSON at all
    st.integers(4300, 20000).map(lambda digits: b'{"type":"post","ref":' + b"9" * digits + b"}"),
    st.sampled_from([b"1e99999", b"-1e99999", b"NaN", b'{"type":"post","body":1e400}']),
    st.integers(10, MAX_FRAME // 2).map(lambda depth: b"[" * depth + b"]" * depth),  # deep
    st.integers(10, MAX_FRAME // 6).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.integers(281, MAX_FRAME - 100).map(
        lambda n: json.dumps({"type": "post", "body": "x" * n, "ref": "long"}).encode()),
)

messages = st.builds(
    Message,
    payload=raw_texts,
    cuts=st.lists(st.integers(0, MAX_FRAME), max_size=3),
    pings=st.integers(0, 2),
) | st.builds(Message, payload=st.binary(max_size=100), binary=st.just(True))

CLOSE_CODES = st.sampled_from([1000, 1001, 1003, 1008, 3000, 4000, 4999])
BAD_CLOSE_CODES = st.sampled_from([0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])

endings = st.one_of(
    # The server answers a close with 1000 whatever its code (RFC 6455 5.5.1 allows it).
    CLOSE_CODES.map(lambda code: Ending(frame(CLOSE, struct.pack("!H", code)), NORMAL, "close")),
    st.just(Ending(frame(CLOSE, b""), NORMAL, "close without a code")),
    BAD_CLOSE_CODES.map(lambda code: Ending(
        frame(CLOSE, struct.pack("!H", code)), PROTOCOL_ERROR, f"close code {code}", True)),
    st.just(Ending(frame(CLOSE, b"\x03"), PROTOCOL_ERROR, "a one-byte close", True)),
    st.just(Ending(frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), INVALID_DATA,
                   "a close reason of invalid UTF-8", True)),
    st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                     b'{"type":"post","body":"\xe2\x82"}']).map(
        lambda bad: Ending(frame(TEXT, bad), INVALID_DATA, "invalid UTF-8")),
    st.just(Ending(frame(TEXT, b'{"body":"\xe2', fin=False) + frame(CONTINUATION, b"\x28\xa1"),
                   INVALID_DATA, "invalid UTF-8 across fragments")),
    st.just(Ending(frame(BINARY, b"x" * (MAX_FRAME + 1)), TOO_BIG, "an oversized frame")),
    st.just(Ending(frame(TEXT, b"[" * (MAX_FRAME // 2), fin=False)
                   + frame(CONTINUATION, b"]" * (MAX_FRAME // 2 + 1)), TOO_BIG,
                   "an oversized message in fragments")),
    st.integers(1, 7).map(lambda rsv: Ending(frame(TEXT, b"{}", rsv=rsv), PROTOCOL_ERROR,
                                             "reserved bits")),
    st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]).map(
        lambda opcode: Ending(frame(opcode, b""), PROTOCOL_ERROR, f"opcode {opcode}")),
    st.just(Ending(frame(TEXT, b"{}", masked=False), PROTOCOL_ERROR, "an unmasked frame")),
    st.just(Ending(frame(CONTINUATION, b"{}"), PROTOCOL_ERROR, "a stray continuation")),
    st.just(Ending(frame(TEXT, b"{", fin=False) + frame(TEXT, b"}"), PROTOCOL_ERROR,
                   "a new message inside a fragmented one")),
    st.just(Ending(frame(PING, b"p" * 126), PROTOCOL_ERROR, "an oversized ping")),
    st.just(Ending(frame(PING, b"p", fin=False), PROTOCOL_ERROR, "a fragmented ping")),
)


@define
class Exchange:
    messages: list[Message]
    flood: int
    ending: Ending


exchanges = st.builds(Exchange, messages=st.lists(messages, max_size=6),
                      flood=st.integers(0, 300) | st.just(0), ending=endings)


def cancel_close_timers(server: Server) -> None:
    """
    Autobahn's timers for closing handshakes the server starts live in one-second
    buckets whose reactor calls outlast the connections: cancel those at the end of a
    test, they would fire on nothing.
    """
    timer = server.web.live._batched_timer
    for call in reactor.getDelayedCalls():
        if getattr(call.func, "__self__", None) is timer:
            call.cancel()


class FuzzedFramesTests(TestCase):
    timeout = 300

    def test_fuzzed_frames(self) -> None:
        """Hypothesis-made frames on real connections: each answered, each violation closed."""
        return Deferred.fromCoroutine(self._fuzzed_frames())

    async def _fuzzed_frames(self) -> None:
        server = await start_server(self)
        self.addCleanup(cancel_close_timers, server)
        tokens = await server.room_with(ROOM, "ada")
        path = f"/api/v1/rooms/{ROOM}/live?token={tokens['ada']}"
        tried: list[str] = []
        totals: Counter[str] = Counter()

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  report_multiple_bugs=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(exchange=exchanges)
        def each(exchange: Exchange) -> None:
            client: RawClient = blockingCallFromThread(reactor, lambda: Deferred.fromCoroutine(
                self._exchange(server.port, path, exchange)))
            tried.append(exchange.ending.what)
            self.assertIn(client.close_code, exchange.ending.codes(), exchange.ending)
            self.assertEqual(client.answers(), len(exchange.messages), client.messages)
            pings = exchange.flood + sum(m.sent_pings for m in exchange.messages)
            self.assertEqual(client.pongs, pings)
            totals.update(messages=len(exchange.messages), pings=pings)

        await deferToThread(each)
        self.assertGreater(len(set(tried)), 15)  # most kinds of ending came up
        log.info("fuzzed {connections} connections: {messages} messages, {pings} pings;"
                 " endings: {endings}", connections=len(tried), messages=totals["messages"],
                 pings=totals["pings"], endings=dict(Counter(tried)))
        await self._still_serving(server)

    async def _exchange(self, port: int, path: str, exchange: Exchange) -> RawClient:
        client = RawClient(path)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        await client.upgraded.addTimeout(TIMEOUT, reactor)
        assert client.transport is not None
        for message in exchange.messages:
            client.transport.write(message.frames())
        client.transport.write(frame(PING, b"f") * exchange.flood)
        pings = exchange.flood + sum(m.sent_pings for m in exchange.messages)
        await client.until(lambda: client.answers() >= len(exchange.messages)
                           and client.pongs >= pings)
        client.transport.write(exchange.ending.wire)
        await client.closed.addTimeout(TIMEOUT, reactor)
        return client

    async def _still_serving(self, server: Server) -> None:
        """Another client connects, gets its welcome and posts; no connection is left over."""
        other = await connect(server.port, f"/api/v1/rooms/{ROOM}/live")
        await other.wait_for(count("welcome", 1))
        code, _ = await server.http.call("GET", f"/api/v1/rooms/{ROOM}")
        self.assertEqual(code, 200)
        self.assertEqual(len(server.web.live.connections), 1)
        other.sendClose()
        await other.closed



class RefusalTests(TestCase):
    def test_since_out_of_range(self) -> None:
        """A C{since} past any seq is refused with an error frame and 1008, not a server error."""
        async def go() -> None:
            server = await start_server(self)
            await server.room_with(ROOM)
            client = await connect(server.port, f"/api/v1/rooms/{ROOM}/live?since={2**62}")
            self.assertEqual(await client.closed, 1008)
            self.assertEqual([(f["type"], f["code"]) for f in client.frames],
                             [("error", "bad_request")])
        return Deferred.fromCoroutine(go())

    def test_deep_nesting(self) -> None:
        """JSON nested past Python's stack is a bad_request error frame; the socket stays."""
        async def go() -> None:
            server = await start_server(self)
            tokens = await server.room_with(ROOM, "ada")
            client = await connect(server.port,
                                   f"/api/v1/rooms/{ROOM}/live?token={tokens['ada']}")
            await client.wait_for(count("welcome", 1))
            client.sendMessage(b"[" * 30_000 + b"]" * 30_000)
            client.post("still here", ref="after")
            frames = await client.wait_for(count("ack", 1))
            self.assertEqual([(f["code"], f["message"]) for f in frames if f["type"] == "error"],
                             [("bad_request",
                               "The body is not valid JSON: it is nested too deeply.")])
        return Deferred.fromCoroutine(go())
