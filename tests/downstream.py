"""
A downstream HTTP server for the relay's tests: it records every request and
answers each with the next status it was given (200 once they run out).
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site


@frozen
class Received:
    method: str
    uri: str
    headers: dict[str, str]
    body: bytes


class Downstream(Resource):
    """Records requests; C{answers} are the statuses to give, C{hold} keeps them waiting."""

    isLeaf = True

    def __init__(self, answers: list[int] | None = None) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.answers = list(answers or [])
        self.hold = False
        self.held: list[Request] = []
        self.arrived: list[Deferred[None]] = []

    def render(self, request: Request) -> Any:
        self.received.append(Received(
            method=request.method.decode(), uri=request.uri.decode(),
            headers={k.decode().lower(): v[0].decode()
                     for k, v in request.requestHeaders.getAllRawHeaders()},
            body=request.content.read() if request.content is not None else b""))
        waiting, self.arrived = self.arrived, []
        for d in waiting:
            d.callback(None)
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.answers.pop(0) if self.answers else 200)
        return b"thanks"

    def next_request(self) -> Deferred[None]:
        """Fires when the next request arrives."""
        d: Deferred[None] = Deferred()
        self.arrived.append(d)
        return d.addTimeout(15, reactor)

    def release(self) -> None:
        """Answer the held requests with 200."""
        held, self.held = self.held, []
        for request in held:
            if not request.finished and not request._disconnected:
                request.write(b"thanks")
                request.finish()


async def start_downstream(test: TestCase, answers: list[int] | None = None,
                           ) -> tuple[Downstream, str]:
    """A L{Downstream} on a free loopback port; its base URL. It stops at cleanup."""
    downstream = Downstream(answers)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(downstream))
    test.addCleanup(port.stopListening)
    return downstream, f"http://127.0.0.1:{port.getHost().port}"
