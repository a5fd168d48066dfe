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

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
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
