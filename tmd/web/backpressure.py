"""
How much may wait for one live client that does not read (a websocket or an event stream).

A L{SendBuffer} is the streaming producer of a client's transport: the transport
pauses it when its own buffer is full and resumes it once the kernel has taken
everything. What is written while paused waits in the daemon's memory; past the
limit the client is a slow consumer, and its owner drops it (it reconnects with
C{since} and misses nothing). A catch-up from the store waits for
L{SendBuffer.ready} instead, so a long backlog goes at the client's pace.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.tcp import Connection
from zope.interface import implementer


@implementer(IPushProducer)
class SendBuffer:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.paused = False
        self.stopped = False
        """The connection is gone: nothing more is written."""
        self.waiting_bytes = 0
        """Bytes written since the transport paused: what waits beyond its own buffer."""
        self._ready: list[Deferred[None]] = []

    def take(self, size: int) -> bool:
        """
        Whether C{size} more bytes may be written (counted if so); False when they
        would make more than the limit wait: the client is too slow, drop it.
        """
        if not self.paused:
            return True
        if self.waiting_bytes + size > self.limit:
            return False
        self.waiting_bytes += size
        return True

    def ready(self) -> Deferred[None] | None:
        """None if the transport takes more now, else a Deferred that fires once it does."""
        if not self.paused or self.stopped:
            return None
        waiting: Deferred[None] = Deferred()
        self._ready.append(waiting)
        return waiting

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.waiting_bytes = 0
        self._release()

    def stopProducing(self) -> None:
        self.stopped = True
        self._release()

    def _release(self) -> None:
        ready, self._ready = self._ready, []
        for waiting in ready:
            waiting.callback(None)



class DirectWriter:
    """
    Writes frames to clients' TCP connections (or wrappers of them, such as the Guard's):
    the first frame a connection gets in a reactor turn goes straight to its socket
    when nothing waits before it, and later ones in the same turn wait in its buffer.

    A write through Twisted's buffer costs, per client, two epoll changes and a dispatch
    in the next turn besides the send: most of a fan-out's cost at lecture-hall rates,
    where the kernel takes each frame at once. A busy room's frames, though, are best
    sent together, one send for many: so only a turn's first frame skips the buffer.
    What the kernel does not take waits in the buffer as usual (a slow client's
    producer is paused as before).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._written: set[Connection] = set()
        """Connections written to directly this turn."""

    def write(self, transport: Any, data: bytes) -> None:
        tcp = getattr(transport, "transport", None)
        if not isinstance(tcp, Connection):
            tcp = transport
        if (not isinstance(tcp, Connection) or tcp in self._written or not tcp.connected
                or tcp.disconnecting or tcp._writeDisconnected or tcp._tempDataBuffer
                or len(tcp.dataBuffer) > tcp.offset):
            transport.write(data)
            return
        if not self._written:
            self._clock.callLater(0, self._written.clear)
        self._written.add(tcp)
        try:
            sent = tcp.socket.send(data)
        except OSError:  # full (EAGAIN) or failing: Twisted's write finds out and says so
            sent = 0
        if sent < len(data):
            tcp.write(data[sent:])
