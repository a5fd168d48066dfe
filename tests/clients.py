"""
Real clients for tests: JSON over HTTP, and a websocket client that collects JSON
frames and waits on them with Deferreds.
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
from twisted.web.client import Agent, HTTPConnectionPool

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

    def __init__(self, url: str, origin: str | None = None) -> None:
        super().__init__(url, reactor=reactor, origin=origin)
        self.opened: Deferred[LiveClient] = Deferred()


async def _value(value: Any) -> Any:
    return value


async def connect(port: int, path: str, origin: str | None = None) -> LiveClient:
    """
    Open a websocket to C{ws://127.0.0.1:port/path}, as a page from C{origin} if given;
    fires once the handshake is done.
    """
    factory = LiveClientFactory(f"ws://127.0.0.1:{port}{path}", origin)
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
