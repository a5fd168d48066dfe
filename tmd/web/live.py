"""
The websocket live endpoint: welcome, backlog, live messages and posting.

Each connection follows its room with a L{Follower} (every message once, in seq
order, catching up from the store when behind). Live frames are prepared once per
event for all connections of the factory. A client that stops reading is closed
with 1013 once more than C{max_send_buffer} bytes wait for it (L{SendBuffer}).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import encode_truncate
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from tmd.chat import Chat, start_point
from tmd.errors import ApiError, BadRequest, Forbidden, NotFound, Unavailable
from tmd.follow import Follower
from tmd.hub import Hub
from tmd.limits import DEFAULT_MAX_SEND_BUFFER, NO_PROXIES, TrustedProxies
from tmd.model import Event, Message, Room, Viewer
from tmd.origins import origin_allowed
from tmd.web.backpressure import DirectWriter, SendBuffer
from tmd.wire import (
    ack_json,
    decode_object,
    encode,
    error_frame,
    error_json,
    message_frame,
    participant_json,
)

MAX_FRAME = 64 * 1024
BACKLOG = 100
MAX_SEQ = 2**62
"""Seqs a client names are below this (SQLite's integers hold them; no room gets near)."""
MAX_REF = 200

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_GONE = 4404


class LiveProtocol(WebSocketServerProtocol):
    """One live client of one room."""

    factory: LiveFactory
    _log = Logger()  # Autobahn owns .log

    def __init__(self) -> None:
        super().__init__()
        self._room: Room | None = None
        self._follower: Follower | None = None
        self._token: str | None = None
        self._since: int | None = None
        self._room_id: str | None = None
        self._refusal: ApiError | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._buffer = SendBuffer(self.factory.max_send_buffer)
        transport = cast(IConsumer, self.transport)
        transport.unregisterProducer()  # the HTTP channel's, from before the upgrade
        transport.registerProducer(self._buffer, True)

    def onConnect(self, request: ConnectionRequest) -> None:
        assert self.transport is not None
        self._address = self.factory.trusted.key(self.transport.getPeer(),
                                                 request.headers.get("x-forwarded-for"))
        # The path is /api/v1/rooms/{name}/live: the route matched it already.
        self._name = unquote(request.path.split("/")[4])
        params = request.params
        self._token = params["token"][0] if params.get("token") else None
        self._room_id = params["room_id"][0] if params.get("room_id") else None
        if not origin_allowed(request.headers.get("origin"), request.headers.get("host"),
                              self.factory.origins):
            self._refusal = Forbidden("This page may not open this room's live view.")
            return
        if params.get("since"):
            try:
                self._since = int(params["since"][0])
                if not 0 <= self._since < MAX_SEQ:
                    raise ValueError
            except ValueError:
                self._refusal = BadRequest("'since' must be a non-negative integer.")

    def sendHttpErrorResponse(self, code: int, reason: str,
                              responseHeaders: list[tuple[str, str]] | None = None) -> None:
        """
        A failed handshake, answered as every HTTP error is: the API's error body (Autobahn
        sends a bare status line whose phrase repeats what the client sent).
        """
        error = ApiError(reason[:200])
        error.status = code
        error.code = {403: "forbidden", 405: "method_not_allowed"}.get(
            code, "bad_request" if code < 500 else "internal")
        body = encode(error_json(error))
        head = [f"HTTP/1.1 {code} {HTTPStatus(code).phrase}",
                "Content-Type: application/json; charset=utf-8",
                f"Content-Length: {len(body)}", "Connection: close",
                *(f"{name}: {value}" for name, value in responseHeaders or ())]
        self.sendData("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)

    def onOpen(self) -> None:
        self.factory.connections.add(self)
        self.run(self._open(), "opening a live connection")

    async def _open(self) -> None:
        try:
            if self._refusal is not None:
                raise self._refusal
            room = await self.factory.chat.room(self._name)
            you = await self.factory.chat.check_read(room, self._token)
        except ApiError as e:
            self._refuse(e)
            return
        if not self.can_send():
            return
        self._room = room
        since, new_room = start_point(room, self._since, self._room_id, BACKLOG)
        viewer = Viewer(participant_id=you.id if you is not None else None,
                        owner=self.factory.chat.is_owner(room, self._token))
        self._follower = Follower(self.factory.chat, room, since, self, self._buffer.ready)
        self.factory.hub.subscribe(room.id, self._follower, viewer)
        self.sendMessage(encode({
            "type": "welcome", "room": self.factory.chat.room_json(room),
            "you": participant_json(you) if you is not None else None,
            "owner": viewer.owner, "new_room": new_room,
        }))
        await self._follower.catch_up()

    def run(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """
        Run C{work}; if it fails unexpectedly (the database is away, say), log it and
        close with 1011 so that the client reconnects and resumes from its last seq.
        """
        def failed(failure: Failure) -> None:
            if failure.check(Unavailable):  # stay connected: the Bus resyncs us when it is back
                self._log.info("{what}: the database is unavailable", what=what)
                return
            self._log.failure("{what} failed", failure, what=what)
            if self.can_send():
                self.close(CLOSE_SERVER_ERROR, "The server could not serve you: reconnect.")

        Deferred.fromCoroutine(work).addErrback(failed)

    def _refuse(self, error: ApiError) -> None:
        self.sendMessage(error_frame(error, None))
        code = CLOSE_POLICY
        if isinstance(error, NotFound):
            code = CLOSE_GONE
        elif isinstance(error, Unavailable):
            code = CLOSE_TRY_AGAIN
        self.close(code, error.message)

    def close(self, code: int, reason: str) -> None:
        """
        Start the closing handshake with C{code}. (Autobahn's C{sendClose} accepts only
        application codes; 1001 and 1008 are the protocol's own.)
        """
        self.sendCloseFrame(code, encode_truncate(reason, 123), isReply=False)

    def can_send(self) -> bool:
        return self.state == WebSocketServerProtocol.STATE_OPEN

    # Every frame goes out through one of these two: count it there.
    def sendMessage(self, payload: bytes, *args: Any, **kwargs: Any) -> None:
        if self._fits(len(payload) + 10):  # 10: the longest frame header from a server
            super().sendMessage(payload, *args, **kwargs)
            self.factory.frames_sent += 1

    def sendPreparedMessage(self, preparedMsg: PreparedMessage) -> None:
        if self._fits(len(preparedMsg.payloadHybi)):
            transport = self.transport
            if self.send_queue or self._perMessageCompress is not None or transport is None:
                super().sendPreparedMessage(preparedMsg)  # Autobahn's queue, or compression
            else:  # what sendData does, without the debug-log arguments it builds per frame
                self.factory.writer.write(transport, preparedMsg.payloadHybi)
            self.factory.frames_sent += 1

    def _fits(self, size: int) -> bool:
        """
        Whether a frame of C{size} bytes may wait for the client; if not, it stopped
        reading: close with 1013, and drop it if it does not read the close in time.
        """
        if self._buffer.take(size):
            return True
        self._log.info("websocket client {address} of room {room} stopped reading: closing"
                       " with 1013 ({bytes} bytes waiting)", address=self._address,
                       room=self._name, bytes=self._buffer.waiting_bytes)
        self.factory.on_slow_consumer()
        self.close(CLOSE_TRY_AGAIN, "You fell too far behind: reconnect with since.")
        return False

    def send_message(self, message: Message) -> None:
        self.sendMessage(message_frame(message))

    def send_event(self, event: Event) -> None:
        if event.gone:
            self.sendMessage(event.frame)
            self.close(CLOSE_GONE, "This room was deleted.")
        else:
            self.sendPreparedMessage(self.factory.prepared(event))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        ref = None
        try:
            if isBinary:
                raise BadRequest("Frames are JSON text, not binary.")
            frame = decode_object(payload)
            ref = frame.get("ref")
            if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF):
                ref = None
                raise BadRequest(f"'ref' must be a string of at most {MAX_REF} characters.")
            if frame.get("type") != "post":
                raise BadRequest("Unknown frame type: clients send {\"type\": \"post\", ...}.")
            if self._room is None:
                raise BadRequest("Wait for the welcome frame before posting.")
        except ApiError as e:
            self.sendMessage(error_frame(e, ref))
            return
        self.run(self._post(ref, frame), "posting from a live connection")

    async def _post(self, ref: str | None, frame: dict[str, Any]) -> None:
        assert self._room is not None
        try:
            message = await self.factory.chat.post(
                self._room.name, self._token, frame, self._address)
        except ApiError as e:
            if self.can_send():
                self.sendMessage(error_frame(e, ref))
            return
        if self.can_send():
            self.sendMessage(encode(ack_json(ref, message)))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._buffer.stopProducing()  # Autobahn's aborts unregister it first: wake catch-ups
        self.factory.connections.discard(self)
        if self._room is not None and self._follower is not None:
            self.factory.hub.unsubscribe(self._room.id, self._follower)


class LiveFactory(WebSocketServerFactory):
    """The live connections of this daemon, and the one-entry cache of prepared frames."""

    _log = Logger()  # Autobahn owns .log

    protocol = LiveProtocol  # type: ignore[assignment]

    def __init__(self, chat: Chat, hub: Hub, reactor: IReactorTime,
                 origins: frozenset[str] = frozenset(), trusted: TrustedProxies = NO_PROXIES,
                 max_send_buffer: int = DEFAULT_MAX_SEND_BUFFER,
                 on_slow_consumer: Callable[[], object] = lambda: None) -> None:
        super().__init__(reactor=reactor)
        self.chat = chat
        self.hub = hub
        self.origins = origins
        """The origins whose pages may open sockets; none: the host itself only."""
        self.trusted = trusted
        """Proxies whose X-Forwarded-For names the client, for rate limits."""
        self.writer = DirectWriter(reactor)
        """Writes the room's frames, prepared once, to each client."""
        self.max_send_buffer = max_send_buffer
        """Bytes that may wait for a client that does not read, past its transport's own."""
        self.on_slow_consumer = on_slow_consumer
        """Called when a client is closed for not reading (the slow-consumer count)."""
        self.connections: set[LiveProtocol] = set()
        self.frames_sent = 0
        """Frames sent to clients so far (a plain count: the metrics read it when scraped)."""
        self._prepared_event: Event | None = None
        self._prepared: PreparedMessage | None = None
        self.setProtocolOptions(
            maxFramePayloadSize=MAX_FRAME, maxMessagePayloadSize=MAX_FRAME,
            autoPingInterval=25, autoPingTimeout=30,
            openHandshakeTimeout=10, closeHandshakeTimeout=5,
            # Say why (1009 too big, 1002 protocol error) rather than just drop the connection.
            failByDrop=False,
        )

    def prepared(self, event: Event) -> PreparedMessage:
        """The frame for C{event}, prepared once: the Hub hands one event to all in a row."""
        if event is not self._prepared_event:
            self._prepared_event = event
            self._prepared = self.prepareMessage(event.frame)
        assert self._prepared is not None
        return self._prepared

    async def close_all(self, clock: IReactorTime, timeout: float) -> None:
        """Close every connection with 1001; returns once all have closed, or at C{timeout}."""
        closing: list[Deferred[object]] = []
        for connection in list(self.connections):
            connection.close(CLOSE_GOING_AWAY, "The server is shutting down.")
            closing.append(connection.is_closed)
        try:
            await DeferredList(closing, consumeErrors=True).addTimeout(timeout, clock)
        except TimeoutError:
            self._log.warn("{count} websocket clients did not answer the close in time",
                          count=len(self.connections))
