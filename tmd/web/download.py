"""
Files sent as they are made, at the pace the client reads them.

Writing to a request without waiting only moves a long file from the store into
the transport's buffer. A L{Download} registers as the request's producer, so it
waits while the client's buffer is full and stops once the client has hung up.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.web.server import Request
from zope.interface import implementer


@implementer(IPushProducer)
class Download:
    """
    One streamed attachment. Make it before the route's first C{await}: a request
    tells of a hang-up only those who asked before it happened.
    """

    def __init__(self, request: Request) -> None:
        self._request = request
        self._paused: Deferred[None] | None = None
        self.hung_up = False
        request.notifyFinish().addErrback(lambda _: self.stopProducing())

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self.hung_up = True
        self.resumeProducing()

    async def send(self, filename: str, headers: Mapping[str, str],
                   chunks: AsyncGenerator[bytes, None]) -> None:
        """
        Send C{chunks} as the attachment C{filename}, with C{headers} (its
        C{Content-Type} at least). A failure once sending has begun aborts the
        connection, so that a cut-off file cannot pass for a whole one.
        """
        request = self._request
        for name, value in {
            **headers,
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        }.items():
            request.setHeader(name.encode("ascii"), value.encode("ascii"))
        if self.hung_up:
            return
        request.registerProducer(self, True)
        try:
            async with aclosing(chunks):
                async for chunk in chunks:
                    if self._paused is not None:
                        await self._paused
                    if self.hung_up:
                        return
                    request.write(chunk)
        except Exception:
            if request.channel is not None:  # still connected (HTTP/2 streams abort too)
                cast(ITCPTransport, request.transport).abortConnection()
            raise
        finally:
            if request.channel is not None:
                request.unregisterProducer()
