"""
Real clients for tests: JSON over HTTP, and a websocket client and an event stream
client that collect JSON frames and wait on them with Deferreds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

Frames = list[dict[str, Any]]
TIMEOUT = 15


class LiveClient(WebSocketClientProtocol):
    """Keeps every frame; C{wait_for(predicate)} fires once C{predicate(frames)} holds."""

    factory: LiveClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.frames: Frames = []
        self.close_code: int | None = None
        self.closed: Deferred[int | None] = Deferred()
        self._waiting: list[tuple[Callable[[Frames], bool], Deferred[Frames]]] = []

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.append(json.loads(payload.decode("utf-8")))
        still = []
        for predicate, d in self._waiting:
            if predicate(self.frames):
                d.callback(self.frames)
            else:
                still.append((predicate, d))
        self._waiting = still

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code = code
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"refused: {code} {reason}"))
        self.closed.callback(code)
        for _, d in self._waiting:
            d.errback(ConnectionError(f"closed with {code} while waiting; frames: {self.frames}"))
        self._waiting = []

    def wait_for(self, predicate: Callable[[Frames], bool]) -> Deferred[Frames]:
        if predicate(self.frames):
            return Deferred.fromCoroutine(_value(self.frames))
        d: Deferred[Frames] = Deferred()
        self._waiting.append((predicate, d))
        return d.addTimeout(TIMEOUT, reactor)

    def messages(self) -> list[dict[str, Any]]:
        return [f["message"] for f in self.frames if f["type"] == "message"]

    def post(self, body: str, ref: str) -> None:
        self.sendMessage(json.dumps({"type": "post", "body": body, "ref": ref}).encode("utf-8"))


class LiveClientFactory(WebSocketClientFactory):
    protocol = LiveClient

    def __init__(self, url: str, origin: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(url, reactor=reactor, origin=origin, headers=headers)
        self.opened: Deferred[LiveClient] = Deferred()


async def _value(value: Any) -> Any:
    return value


async def connect(port: int, path: str, origin: str | None = None,
                  headers: dict[str, str] | None = None) -> LiveClient:
    """
    Open a websocket to C{ws://127.0.0.1:port/path}, as a page from C{origin} if given,
    with more request C{headers}; fires once the handshake is done.
    """
    factory = LiveClientFactory(f"ws://127.0.0.1:{port}{path}", origin, headers)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    return await factory.opened.addTimeout(TIMEOUT, reactor)


def count(kind: str, n: int) -> Callable[[Frames], bool]:
    """A predicate: at least C{n} frames of type C{kind}."""
    return lambda frames: sum(1 for f in frames if f["type"] == kind) >= n


class Http:
    """JSON over HTTP with a non-persistent pool, so no connection outlives a test."""

    def __init__(self, base: str) -> None:
        self.base = base
        pool = HTTPConnectionPool(reactor, persistent=False)
        self._client = HTTPClient(Agent(reactor, pool=pool))

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None,
                   headers: dict[str, list[str]] | None = None,
                   data: bytes | None = None) -> tuple[int, Any]:
        """The status and the body: parsed if JSON, else bytes."""
        sent = {"Content-Type": ["application/json"], **(headers or {})}
        if token is not None:
            sent["Authorization"] = [f"Bearer {token}"]
        if body is not None:
            data = json.dumps(body).encode()
        response = await self._client.request(method, self.base + path, data=data, headers=sent)
        self.last_headers = response.headers
        content = await response.content()
        content_type = (response.headers.getRawHeaders("content-type") or [""])[0]
        return response.code, json.loads(content) if "json" in content_type else content


class EventStreamClient(Protocol):
    """
    Reads a server-sent event stream: keeps each event's frame (its JSON data) and
    id, and each comment; C{until(condition)} fires once C{condition()} holds.
    """

    def __init__(self, response: IResponse) -> None:
        self.response = response
        self.frames: Frames = []
        self.ids: list[int | None] = []
        """Each frame's event id, None for those sent without one."""
        self.comments: list[bytes] = []
        self.ended: Deferred[None] = Deferred()
        self.end_reason: Failure | None = None
        """Why it ended: C{ResponseDone} if the server finished the response."""
        self._unparsed = b""
        self._waiting: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        *events, self._unparsed = (self._unparsed + data).split(b"\n\n")
        for event in events:
            event_id, lines = None, []
            for line in event.split(b"\n"):
                field, _, value = line.partition(b": ")
                if field == b"":
                    self.comments.append(value)
                elif field == b"id":
                    event_id = int(value)
                elif field == b"data":
                    lines.append(value)
                else:
                    raise AssertionError(f"an unexpected line: {line!r}")
            if lines:
                self.frames.append(json.loads(b"\n".join(lines)))
                self.ids.append(event_id)
        still = []
        for condition, d in self._waiting:
            if condition():
                d.callback(None)
            else:
                still.append((condition, d))
        self._waiting = still

    def connectionLost(self, reason: Failure) -> None:
        self.end_reason = reason
        self.ended.callback(None)
        for _, d in self._waiting:
            d.errback(ConnectionError(f"the stream ended while waiting; frames: {self.frames}"))
        self._waiting = []

    def until(self, condition: Callable[[], bool]) -> Deferred[None]:
        if condition():
            return Deferred.fromCoroutine(_value(None))
        d: Deferred[None] = Deferred()
        self._waiting.append((condition, d))
        return d.addTimeout(TIMEOUT, reactor)

    def wait_for(self, predicate: Callable[[Frames], bool]) -> Deferred[None]:
        return self.until(lambda: predicate(self.frames))

    def messages(self) -> list[dict[str, Any]]:
        return [f["message"] for f in self.frames if f["type"] == "message"]

    async def hang_up(self) -> None:
        """Close the connection, as a browser leaving the page does; fires once it is closed."""
        if not self.ended.called:
            assert self.transport is not None
            self.transport.stopProducing()
        await self.ended


async def open_events(test: TestCase, port: int, path: str,
                      headers: dict[str, list[str]] | None = None) -> EventStreamClient:
    """
    Open the event stream at C{path} (it must answer 200); it is hung up when the
    test ends, if it has not ended before.
    """
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    response = await agent.request(
        b"GET", f"http://127.0.0.1:{port}{path}".encode("ascii"),
        Headers({"Accept": ["text/event-stream"], **(headers or {})}),
    ).addTimeout(TIMEOUT, reactor)
    if response.code != 200:
        raise AssertionError(f"the event stream answered {response.code}")
    client = EventStreamClient(response)
    response.deliverBody(client)
    test.addCleanup(lambda: Deferred.fromCoroutine(client.hang_up()))
    return client
