"""
A fake X API v2 for the Twitter source's tests: the filtered stream and its rules
endpoints, speaking their wire formats (JSON shapes, chunked newline-delimited JSON
with CRLF keep-alives, 429 with x-rate-limit-reset), served on a real loopback port.
"""

from __future__ import annotations

import json
from itertools import count
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.trial.unittest import TestCase
from twisted.web.server import Request

from tests.loopback import TrackedSite, listen

SENT = "2026-11-24T17:00:00.000Z"


def tweet(id: str, text: str, username: str = "ada", tags: tuple[str, ...] = (),
          author_id: str = "2244994945") -> dict[str, Any]:
    """One item of the stream as X sends it: the post, its author in includes, the rules hit."""
    return {
        "data": {"author_id": author_id, "created_at": "2026-11-24T16:59:58.000Z",
                 "edit_history_tweet_ids": [id], "id": id, "text": text},
        "includes": {"users": [{"created_at": "2013-12-14T04:35:55.000Z", "id": author_id,
                                "name": username.title(), "username": username}]},
        "matching_rules": [{"id": str(1000 + i), "tag": tag} for i, tag in enumerate(tags)],
    }


OPERATIONAL_DISCONNECT = {"errors": [{
    "title": "operational-disconnect", "disconnect_type": "UpstreamOperationalDisconnect",
    "detail": "This stream has been disconnected upstream for operational reasons.",
    "type": "https://api.twitter.com/2/problems/operational-disconnect"}]}


class FakeStream:
    """One open connection to the stream, as the server sees it."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.finished: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()
        request.notifyFinish().addBoth(lambda _: self.lost.callback(None))

    def send(self, item: dict[str, Any]) -> None:
        self.request.write(json.dumps(item).encode() + b"\r\n")

    def keep_alive(self) -> None:
        self.request.write(b"\r\n")

    def cut(self) -> None:
        """Drop the connection mid-stream, as a network failure would."""
        self.request.transport.abortConnection()


class FakeTwitter:
    """The X API as far as the Twitter source uses it; C{app} is a Klein app."""

    app = Klein()

    def __init__(self, token: str = "the-bearer-token") -> None:
        self.token = token
        self.rules: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, str]] = []
        """Every request: method and path with its query."""
        self.answers: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        """What the next stream requests get instead of a stream: code, headers, body."""
        self.streams: list[FakeStream] = []
        self._waiting: list[Deferred[FakeStream]] = []
        self._changes: list[Deferred[None]] = []
        self._ids = count(1_600_000_000_000_000_000)

    async def serve(self, test: TestCase) -> str:
        """Listen on a loopback port until C{test} ends; the base URL."""
        port: IListeningPort = await listen(test, TrackedSite(self.app.resource()))
        return f"http://127.0.0.1:{port.getHost().port}"

    def add_rule(self, value: str, tag: str) -> str:
        id = str(next(self._ids))
        self.rules[id] = {"id": id, "value": value, "tag": tag}
        return id

    def next_stream(self) -> Deferred[FakeStream]:
        """Fires with the next stream connection."""
        waiting: Deferred[FakeStream] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def next_change(self) -> Deferred[None]:
        """Fires once the rules have next been changed."""
        waiting: Deferred[None] = Deferred()
        self._changes.append(waiting)
        return waiting

    def _changed(self) -> None:
        waiting, self._changes = self._changes, []
        for each in waiting:
            each.callback(None)

    def _refused(self, request: Request) -> bytes | None:
        self.calls.append((request.method.decode(), request.uri.decode()))
        request.setHeader("content-type", "application/json; charset=utf-8")
        if request.getHeader("authorization") != f"Bearer {self.token}":
            request.setResponseCode(401)
            return json.dumps({"title": "Unauthorized", "type": "about:blank", "status": 401,
                               "detail": "Unauthorized"}).encode()
        return None

    @app.route("/2/tweets/search/stream/rules", methods=["GET"])
    def get_rules(self, request: Request) -> bytes:
        refused = self._refused(request)
        if refused is not None:
            return refused
        answer: dict[str, Any] = {"meta": {"sent": SENT, "result_count": len(self.rules)}}
        if self.rules:
            answer["data"] = list(self.rules.values())
        return json.dumps(answer).encode()

    @app.route("/2/tweets/search/stream/rules", methods=["POST"])
    def change_rules(self, request: Request) -> bytes:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = json.loads(request.content.read())
        if "delete" in body:
            ids = body["delete"]["ids"]
            gone = [id for id in ids if self.rules.pop(id, None) is not None]
            self._changed()
            return json.dumps({"meta": {"sent": SENT, "summary": {
                "deleted": len(gone), "not_deleted": len(ids) - len(gone)}}}).encode()
        created, errors = [], []
        for rule in body["add"]:
            if any(r["value"] == rule["value"] for r in self.rules.values()):
                errors.append({"value": rule["value"], "id": "1", "title": "DuplicateRule",
                               "type": "https://api.twitter.com/2/problems/duplicate-rules"})
                continue
            id = self.add_rule(rule["value"], rule["tag"])
            created.append(self.rules[id])
        request.setResponseCode(201)
        self._changed()
        answer: dict[str, Any] = {"meta": {"sent": SENT, "summary": {
            "created": len(created), "not_created": len(errors), "valid": len(created),
            "invalid": len(errors)}}}
        if created:
            answer["data"] = created
        if errors:
            answer["errors"] = errors
        return json.dumps(answer).encode()

    @app.route("/2/tweets/search/stream", methods=["GET"])
    def stream(self, request: Request) -> bytes | Deferred[bytes]:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if self.answers:
            code, headers, body = self.answers.pop(0)
            request.setResponseCode(code)
            for name, value in headers.items():
                request.setHeader(name, value)
            return json.dumps(body).encode()
        request.write(b"")  # the headers, at once, as X sends them
        stream = FakeStream(request)
        self.streams.append(stream)
        waiting, self._waiting = self._waiting, []
        for each in waiting:
            each.callback(stream)
        return stream.finished
