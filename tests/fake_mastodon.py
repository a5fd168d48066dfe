"""
A fake Mastodon instance for the Mastodon source's tests: hashtag streaming as
server-sent events (C{event:}/C{data:} lines, C{:thump} comments) and the public
hashtag timeline, with real status JSON, served on a real loopback port.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.server import Request

from tests.loopback import TrackedSite, listen


def status(id: str, content: str, acct: str = "ada@physics.example", tag: str = "phys101",
           **changes: Any) -> dict[str, Any]:
    """A status as Mastodon's API renders it (the fields that matter, and a few that do not)."""
    username = acct.split("@")[0]
    found: dict[str, Any] = {
        "id": id, "created_at": "2026-11-24T16:59:58.000Z", "in_reply_to_id": None,
        "sensitive": False, "spoiler_text": "", "visibility": "public", "language": "en",
        "uri": f"https://physics.example/users/{username}/statuses/{id}",
        "url": f"https://physics.example/@{username}/{id}", "replies_count": 0,
        "reblogs_count": 0, "favourites_count": 0, "content": content, "reblog": None,
        "account": {"id": "1", "username": username, "acct": acct,
                    "display_name": username.title(),
                    "url": f"https://physics.example/@{username}"},
        "media_attachments": [], "mentions": [],
        "tags": [{"name": tag, "url": f"https://mastodon.example/tags/{tag}"}],
    }
    found.update(changes)
    return found


class FakeEventStream:
    """One open hashtag stream, as the server sees it."""

    def __init__(self, request: Request, tag: str) -> None:
        self.request = request
        self.tag = tag
        self.finished: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()
        request.notifyFinish().addBoth(lambda _: self.lost.callback(None))

    def update(self, status: dict[str, Any]) -> None:
        self.request.write(b"event: update\ndata: " + json.dumps(status).encode() + b"\n\n")

    def delete(self, id: str) -> None:
        self.request.write(b"event: delete\ndata: " + id.encode() + b"\n\n")

    def thump(self) -> None:
        self.request.write(b":thump\n")


class FakeMastodon:
    """A Mastodon instance as far as the source uses it; C{app} is a Klein app."""

    app = Klein()

    def __init__(self, token: str = "the-access-token") -> None:
        self.token = token
        self.calls: list[str] = []
        """Every request's path with its query."""
        self.timelines: dict[str, list[dict[str, Any]]] = {}
        """Each hashtag's public statuses, newest first."""
        self.streams: list[FakeEventStream] = []
        self._waiting: list[Deferred[FakeEventStream]] = []
        self._polls: list[Deferred[str]] = []

    async def serve(self, test: TestCase) -> str:
        port = await listen(test, TrackedSite(self.app.resource()))
        return f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]

    def next_stream(self) -> Deferred[FakeEventStream]:
        waiting: Deferred[FakeEventStream] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def next_poll(self) -> Deferred[str]:
        """Fires with the next timeline request's path and query, once answered."""
        waiting: Deferred[str] = Deferred()
        self._polls.append(waiting)
        return waiting

    @app.route("/api/v1/streaming/hashtag", methods=["GET"])
    def stream(self, request: Request) -> bytes | Deferred[bytes]:
        self.calls.append(request.uri.decode())
        if request.getHeader("authorization") != f"Bearer {self.token}":
            request.setResponseCode(401)
            request.setHeader("content-type", "application/json")
            return b'{"error":"Error while verifying token"}'
        request.setHeader("content-type", "text/event-stream")
        request.setHeader("cache-control", "private, no-store")
        request.write(b":)\n")
        stream = FakeEventStream(request, request.args[b"tag"][0].decode())
        self.streams.append(stream)
        waiting, self._waiting = self._waiting, []
        for each in waiting:
            each.callback(stream)
        return stream.finished

    @app.route("/api/v1/timelines/tag/<tag>", methods=["GET"])
    def timeline(self, request: Request, tag: str) -> bytes:
        self.calls.append(request.uri.decode())
        statuses = self.timelines.get(tag, [])
        min_id = request.args.get(b"min_id", [b""])[0].decode()
        limit = int(request.args.get(b"limit", [b"20"])[0])
        if min_id:  # the statuses just after min_id, newest first, as Mastodon answers
            newer = [s for s in statuses if (len(s["id"]), s["id"]) > (len(min_id), min_id)]
            statuses = newer[-limit:]
        else:
            statuses = statuses[:limit]
        request.setHeader("content-type", "application/json; charset=utf-8")
        polled, self._polls = self._polls, []
        for each in polled:  # once the answer is on its way
            reactor.callLater(0, each.callback, request.uri.decode())  # type: ignore[attr-defined]
        return json.dumps(statuses).encode()
