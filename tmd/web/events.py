"""
The live view as server-sent events, for networks where websockets do not pass.

C{GET /api/v1/rooms/{name}/events} carries the websocket's server frames, one
C{data:} line each. A message's C{id:} is its seq (the welcome's, the seq the
stream starts after), so a client that reconnects with C{Last-Event-ID}, as
C{EventSource} does by itself, or with C{?since=} misses nothing. Each stream
follows its room with a L{Follower}. A comment line every L{KEEP_ALIVE} seconds
keeps proxies from cutting a quiet stream; a client that stops reading is cut
off once more than C{max_send_buffer} bytes wait for it (L{SendBuffer}), and
resumes when it reconnects.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from tmd.chat import Chat, start_point
from tmd.errors import BadRequest, Unavailable
from tmd.follow import Follower
from tmd.hub import Hub
from tmd.limits import DEFAULT_MAX_SEND_BUFFER
from tmd.model import Event, Message, Participant, Room, Viewer
from tmd.web.backpressure import SendBuffer
from tmd.web.live import BACKLOG, MAX_SEQ
from tmd.wire import encode, message_frame, participant_json

KEEP_ALIVE = 20.0
"""Seconds between keep-alive comments; proxies commonly cut a silent response at 60 s."""


def resume_point(request: IRequest) -> int | None:
    """The seq to resume after: C{Last-Event-ID}, else C{?since=}; None for the last 100."""
    since = request.args.get(b"since")
    resume = _seq("since", since[0]) if since and since[0] else None  # checked even if unused
    header = request.getHeader(b"Last-Event-ID")
    if header is not None:
        return _seq("Last-Event-ID", header)
    return resume


def _seq(name: str, value: bytes) -> int:
    text = value.strip()
    if not text.isdigit() or int(text) >= MAX_SEQ:
        raise BadRequest(f"'{name}' must be a non-negative integer (a seq).")
    return int(text)


def query_token(request: IRequest) -> str | None:
    """C{?token=}: an C{EventSource} cannot send an C{Authorization} header."""
    values = request.args.get(b"token")
    return values[0].decode("latin-1") if values and values[0] else None


def sse_event(frame: bytes, event_id: int | None = None) -> bytes:
    """One event: its C{id:} line if given, and the frame as its C{data:} line."""
    head = b"id: %d\n" % event_id if event_id is not None else b""
    return head + b"data: " + frame + b"\n\n"  # JSON text holds no raw line breaks


class EventStreams:
    """The event streams of this daemon."""

    def __init__(self, chat: Chat, hub: Hub, clock: IReactorTime,
                 on_cut_off: Callable[[], object] = lambda: None,
                 max_send_buffer: int = DEFAULT_MAX_SEND_BUFFER) -> None:
        self.chat = chat
        self.hub = hub
        self.clock = clock
        """Times the keep-alive comments."""
        self.on_cut_off = on_cut_off
        """Called when a client too slow to read is dropped (the slow-consumer count)."""
        self.max_send_buffer = max_send_buffer
        """Bytes that may wait for a client that does not read, past its transport's own."""
        self.streams: set[EventStream] = set()

    def stream(self, request: Request) -> EventStream:
        """
        The stream for C{request}. Make it before the route's first C{await}: a request
        tells of a hang-up only those who asked before it happened.
        """
        return EventStream(self, request)

    def close_all(self) -> None:
        """End every stream (at shutdown): clients reconnect and resume."""
        for stream in list(self.streams):
            stream.end()


class EventStream:
    """One client's stream of one room: the L{Follower}'s client."""

    _log = Logger()

    def __init__(self, streams: EventStreams, request: Request) -> None:
        self._streams = streams
        self._request = request
        self._room: Room | None = None
        self._follower: Follower | None = None
        self._keep_alive: IDelayedCall | None = None
        self._open = True
        self._buffer = SendBuffer(streams.max_send_buffer)
        self._ended: Deferred[None] = Deferred()
        request.notifyFinish().addBoth(self._finished)

    async def follow(self, room: Room, you: Participant | None, since: int | None,
                     owner: bool = False, room_id: str | None = None) -> None:
        """
        Send the welcome, the messages after C{since} (the last 100 if None, or if
        C{room_id} says the client followed another room of this name), then live frames,
        the author's and the C{owner}'s own among them; returns when the stream has ended.
        """
        if not self._open:
            return
        streams, request = self._streams, self._request
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")  # nginx: pass each event on at once
        request.registerProducer(self._buffer, True)
        start, new_room = start_point(room, since, room_id, BACKLOG)
        self._room = room
        self._follower = Follower(streams.chat, room, start, self, self._buffer.ready)
        streams.streams.add(self)
        streams.hub.subscribe(room.id, self._follower,
                              Viewer(participant_id=you.id if you is not None else None,
                                     owner=owner))
        self._write(sse_event(encode({
            "type": "welcome", "room": streams.chat.room_json(room),
            "you": participant_json(you) if you is not None else None,
            "owner": owner, "new_room": new_room,
        }), start))
        self._keep_alive = streams.clock.callLater(KEEP_ALIVE, self._send_keep_alive)
        self.run(self._follower.catch_up(), "catching up an event stream")
        await self._ended

    def end(self) -> None:
        """End the response: an C{EventSource} reconnects by itself and resumes."""
        if self.can_send():
            self._request.unregisterProducer()
            self._request.finish()
        self._open = False

    def can_send(self) -> bool:
        return self._open and not self._buffer.stopped  # stopped: the connection is going

    def send_message(self, message: Message) -> None:
        self._write(sse_event(message_frame(message), message.seq))

    def send_event(self, event: Event) -> None:
        self._write(sse_event(event.frame, event.seq))
        if event.gone:
            self.end()

    def run(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """
        Run C{work}; if it fails unexpectedly, log it and end the stream so that the
        client reconnects and resumes. Without the database, stay: the Bus resyncs us.
        """
        def failed(failure: Failure) -> None:
            if failure.check(Unavailable):
                self._log.info("{what}: the database is unavailable", what=what)
                return
            self._log.failure("{what} failed", failure, what=what)
            self.end()

        Deferred.fromCoroutine(work).addErrback(failed)

    def _write(self, data: bytes) -> None:
        if not self.can_send():
            return
        if not self._buffer.take(len(data)):
            self._cut_off()
            return
        self._request.write(data)

    def _cut_off(self) -> None:
        """The client stopped reading: drop it, rather than buffer for it without end."""
        self._log.info("an event stream's client of room {room} stopped reading: cut off"
                       " ({bytes} bytes waiting)", room=self._room.name if self._room else "",
                       bytes=self._buffer.waiting_bytes)
        self._streams.on_cut_off()
        self._open = False
        cast(ITCPTransport, self._request.transport).abortConnection()

    def _send_keep_alive(self) -> None:
        self._write(b": keep-alive\n\n")
        if self.can_send():
            self._keep_alive = self._streams.clock.callLater(KEEP_ALIVE, self._send_keep_alive)

    def _finished(self, _: object) -> None:
        """The response is over, finished or cut: stop following the room."""
        self._open = False
        if self._keep_alive is not None and self._keep_alive.active():
            self._keep_alive.cancel()
        self._streams.streams.discard(self)
        if self._room is not None and self._follower is not None:
            self._streams.hub.unsubscribe(self._room.id, self._follower)
        if not self._ended.called:  # Klein cancels it when the client hangs up
            self._ended.callback(None)
