"""
A minimal broadcast server on Autobahn and Twisted, for comparison with tmd:

    python bench/reference/autobahn_server.py

It speaks tmd's frames without tmd's work: no storage, no participants, no limits.
A websocket at C{/api/v1/rooms/{name}/live} gets a C{welcome} frame and then every
C{message} frame of its room; C{POST /api/v1/rooms/{name}/messages} with C{{"body": ...}}
numbers the message in memory, answers 201 with it, and broadcasts it the way
Autobahn's broadcast example does: C{prepareMessage} once, C{sendPreparedMessage} to
each client of the room. It listens on a free loopback port, says "reference
listening on TCP 127.0.0.1:PORT" on stdout, and stops on SIGTERM.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionRequest
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class BroadcastProtocol(WebSocketServerProtocol):
    factory: BroadcastFactory

    def onConnect(self, request: ConnectionRequest) -> None:
        self.room = request.path.split("/")[4]

    def onOpen(self) -> None:
        self.factory.rooms.setdefault(self.room, set()).add(self)
        self.sendMessage(encode({"type": "welcome", "room": {"name": self.room}, "you": None}))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.rooms.get(getattr(self, "room", ""), set()).discard(self)


class BroadcastFactory(WebSocketServerFactory):
    protocol = BroadcastProtocol  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.rooms: dict[str, set[BroadcastProtocol]] = {}
        self.seqs: dict[str, int] = {}

    def broadcast(self, room: str, payload: bytes) -> None:
        prepared = self.prepareMessage(payload)
        for client in self.rooms.get(room, ()):
            client.sendPreparedMessage(prepared)


class Room(Resource):
    def __init__(self, factory: BroadcastFactory, name: str) -> None:
        super().__init__()
        self.factory = factory
        self.name = name
        self.putChild(b"live", WebSocketResource(factory))
        self.putChild(b"messages", Messages(factory, name))


class Messages(Resource):
    isLeaf = True

    def __init__(self, factory: BroadcastFactory, name: str) -> None:
        super().__init__()
        self.factory = factory
        self.name = name

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body = json.loads(request.content.read())["body"]
        seq = self.factory.seqs.get(self.name, 0) + 1
        self.factory.seqs[self.name] = seq
        message = {"seq": seq, "room": self.name, "kind": "message", "author": "speaker",
                   "body": body, "created_at": timestamp(), "source": "web",
                   "participant_id": 1}
        self.factory.broadcast(self.name, encode({"type": "message", "message": message}))
        request.setResponseCode(201)
        request.setHeader(b"content-type", b"application/json")
        return encode(message)


class Rooms(Resource):
    def __init__(self, factory: BroadcastFactory) -> None:
        super().__init__()
        self.factory = factory

    def getChild(self, path: bytes, request: Request) -> Resource:
        return Room(self.factory, path.decode())


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    factory = BroadcastFactory()
    root = Resource()
    api = Resource()
    v1 = Resource()
    root.putChild(b"api", api)
    api.putChild(b"v1", v1)
    v1.putChild(b"rooms", Rooms(factory))
    site = Site(root)
    site.log = lambda request: None  # type: ignore[method-assign]
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[arg-type]
    print(f"reference listening on TCP 127.0.0.1:{port.getHost().port}",  # type: ignore[attr-defined]
          flush=True)
    reactor.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
