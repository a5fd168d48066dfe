"""The JSON API over real HTTP: every route, and a precise error for every bad input."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from tests.server import Server, start_server
from tmd.logs import json_line
from tmd.metrics import Metrics
from tmd.web.request import LimitedRequest, MeasuredSite

ROOM = "/api/v1/rooms/physics-101"


def with_server(test: Callable[[Any, Server], Coroutine[Any, Any, None]]) -> Callable[[Any], Any]:
    """Run an async test method with a started L{Server}."""

    def run(self: TestCase) -> Deferred[None]:
        async def go() -> None:
            await test(self, await start_server(self))

        return Deferred.fromCoroutine(go())

    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return run


class RoomTests(TestCase):
    @with_server
    async def test_create_and_get(self, server: Server) -> None:
        """A room is created with defaults, its owner token once, and read back."""
        http = server.http
        code, created = await http.call("POST", "/api/v1/rooms",
                                        {"name": "Physics-101", "title": " Physics 101 "})
        self.assertEqual(code, 201)
        self.assertEqual(http.last_headers.getRawHeaders("location"), [ROOM])
        room = created["room"]
        self.assertEqual(
            {k: room[k] for k in ("name", "title", "state", "max_length", "has_password",
                                  "hashtags", "online", "last_seq")},
            {"name": "physics-101", "title": "Physics 101", "state": "open", "max_length": 280,
             "has_password": False, "hashtags": [], "online": 0, "last_seq": 0})
        self.assertRegex(room["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertGreaterEqual(len(created["owner_token"]), 40)
        self.assertEqual(await http.call("GET", ROOM), (200, room))
        self.assertEqual(await http.call("GET", "/api/v1/rooms/PHYSICS-101"), (200, room))

    @with_server
    async def test_create_errors(self, server: Server) -> None:
        """Taken and invalid names, wrong types, bad JSON, wrong type and size of body."""
        http = server.http
        await http.call("POST", "/api/v1/rooms", {"name": "taken"})
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"body": {"name": "taken"}}, 409, "name_taken"),
            ({"body": {"name": "api"}}, 400, "invalid_name"),
            ({"body": {"name": "no spaces"}}, 400, "invalid_name"),
            ({"body": {}}, 400, "bad_request"),
            ({"body": {"name": 7}}, 400, "bad_request"),
            ({"body": {"name": "ok-name", "lifetime": 60}}, 400, "bad_request"),
            ({"body": ["name"]}, 400, "bad_request"),
            ({"data": b"{nope"}, 400, "bad_request"),
            ({"data": b"\xff\xfe"}, 400, "bad_request"),
            ({"data": b'{"name": "x"}', "headers": {"Content-Type": ["text/plain"]}},
             415, "bad_request"),
            ({"data": b'{"name": "' + b"a" * 70_000 + b'"}'}, 413, "payload_too_large"),
        ]
        for case, status, code in cases:
            got_status, body = await http.call("POST", "/api/v1/rooms", **case)
            self.assertEqual((got_status, body["error"]["code"]), (status, code), case)
            self.assertIsInstance(body["error"]["message"], str)

    @with_server
    async def test_unknown_room_and_routes(self, server: Server) -> None:
        """Unknown rooms and paths are 404 with the error body; wrong methods 405."""
        http = server.http
        for path in (ROOM, "/api/v1/rooms/x", "/api/v1/nothing", ROOM + "/messages"):
            status, body = await http.call("GET", path)
            self.assertEqual((status, body["error"]["code"]), (404, "not_found"), path)
        status, body = await http.call("PUT", "/api/v1/rooms")
        self.assertEqual((status, body["error"]["code"]), (405, "method_not_allowed"))
        self.assertEqual(http.last_headers.getRawHeaders("allow"), ["POST"])


class ParticipantTests(TestCase):
    @with_server
    async def test_join_and_post(self, server: Server) -> None:
        """A participant joins, posts (trimmed) and the message is listed."""
        http = server.http
        await http.call("POST", "/api/v1/rooms", {"name": "physics-101"})
        status, joined = await http.call("POST", ROOM + "/join", {"nickname": " ada "})
        self.assertEqual((status, joined["participant"]["nickname"]), (201, "ada"))
        status, message = await http.call("POST", ROOM + "/messages",
                                          {"body": "  Is light a wave?  "}, joined["token"])
        self.assertEqual(status, 201)
        shown = ("seq", "room", "kind", "author", "body", "source")
        self.assertEqual({k: message[k] for k in shown},
                         {"seq": 1, "room": "physics-101", "kind": "chat", "author": "ada",
                          "body": "Is light a wave?", "source": None})
        self.assertEqual(await http.call("GET", ROOM + "/messages"),
                         (200, {"messages": [message], "last_seq": 1}))

    @with_server
    async def test_join_errors(self, server: Server) -> None:
        """Nicknames are unique case-insensitively and bounded; passwords are checked."""
        http = server.http
        await server.room_with("physics-101", "Ada")
        await server.room_with("secret-room", password="hunter2")
        for path, body, status, code in [
            (ROOM, {"nickname": "ADA"}, 409, "name_taken"),
            (ROOM, {"nickname": ""}, 400, "bad_request"),
            (ROOM, {"nickname": "x" * 33}, 400, "bad_request"),
            (ROOM, {}, 400, "bad_request"),
            ("/api/v1/rooms/secret-room", {"nickname": "eve"}, 401, "unauthorized"),
            ("/api/v1/rooms/secret-room", {"nickname": "eve", "password": "guess"}, 401,
             "unauthorized"),
            ("/api/v1/rooms/nope", {"nickname": "eve"}, 404, "not_found"),
        ]:
            got, answer = await http.call("POST", path + "/join", body)
            self.assertEqual((got, answer["error"]["code"]), (status, code), (path, body))
        got, _ = await http.call("POST", "/api/v1/rooms/secret-room/join",
                                 {"nickname": "eve", "password": "hunter2"})
        self.assertEqual(got, 201)

    @with_server
    async def test_post_errors(self, server: Server) -> None:
        """Posting needs a valid token of this room and a body of 1..max_length characters."""
        http = server.http
        tokens = await server.room_with("physics-101", "ada", max_length=5)
        other = await server.room_with("other-room", "bob")
        for token, body, status, code in [
            (None, {"body": "hi"}, 401, "unauthorized"),
            ("wrong", {"body": "hi"}, 401, "unauthorized"),
            (other["bob"], {"body": "hi"}, 401, "unauthorized"),
            (tokens["ada"], {"body": "   "}, 400, "empty"),
            (tokens["ada"], {"body": "123456"}, 400, "too_long"),
            (tokens["ada"], {"body": 5}, 400, "bad_request"),
            (tokens["ada"], {}, 400, "bad_request"),
        ]:
            got, answer = await http.call("POST", ROOM + "/messages", body, token)
            self.assertEqual((got, answer["error"]["code"]), (status, code), (token, body))
        got, _ = await http.call("POST", ROOM + "/messages", {"body": "\U0001f600" * 5},
                                 tokens["ada"])
        self.assertEqual(got, 201)
        got, answer = await http.call("POST", ROOM + "/messages", {"body": "x"},
                                      headers={"Authorization": ["Basic abc"]})
        self.assertEqual((got, answer["error"]["code"]), (401, "unauthorized"))

    @with_server
    async def test_listing_pages(self, server: Server) -> None:
        """C{after} and C{limit} page through messages; bad values are 400."""
        http = server.http
        tokens = await server.room_with("physics-101", "ada")
        for i in range(5):
            await server.chat.post("physics-101", tokens["ada"], {"body": f"m{i}"})
        status, page = await http.call("GET", ROOM + "/messages?after=1&limit=2")
        self.assertEqual((status, [m["seq"] for m in page["messages"]], page["last_seq"]),
                         (200, [2, 3], 5))
        for query in ("after=-1", "after=x", "limit=0", "limit=1001"):
            status, body = await http.call("GET", ROOM + "/messages?" + query)
            self.assertEqual((status, body["error"]["code"]), (400, "bad_request"), query)

    @with_server
    async def test_password_room_reading(self, server: Server) -> None:
        """A password room's messages are read with a participant's or the owner's token."""
        http = server.http
        tokens = await server.room_with("secret-room", "ada", password="hunter2")
        path = "/api/v1/rooms/secret-room/messages"
        status, body = await http.call("GET", path)
        self.assertEqual((status, body["error"]["code"]), (401, "unauthorized"))
        for who in ("ada", "owner"):
            status, _ = await http.call("GET", path, token=tokens[who])
            self.assertEqual(status, 200, who)


class ServiceTests(TestCase):
    @with_server
    async def test_health_openapi_pages(self, server: Server) -> None:
        """Health, the OpenAPI document and the browser page are served."""
        http = server.http
        self.assertEqual(await http.call("GET", "/healthz"), (200, {"status": "ok"}))
        status, document = await http.call("GET", "/api/v1/openapi.json")
        self.assertEqual((status, document["openapi"]), (200, "3.1.0"))
        self.assertIn("/api/v1/rooms", document["paths"])
        for path in ("/", "/physics-101"):
            status, page = await http.call("GET", path)
            self.assertEqual(status, 200, path)
            self.assertIn(b"<!doctype html>", page.lower())
            self.assertEqual(http.last_headers.getRawHeaders("content-type"),
                             ["text/html; charset=utf-8"])
        status, _ = await http.call("GET", "/static/js/room.js")
        self.assertEqual(http.last_headers.getRawHeaders("content-type"),
                         ["text/javascript; charset=utf-8"])
        self.assertEqual(http.last_headers.getRawHeaders("cache-control"), ["no-cache"])
        for path in ("/static/", "/static/../setup.cfg", "/static/%2e%2e/setup.cfg"):
            status, _ = await http.call("GET", path)
            self.assertEqual(status, 404, path)
        for path in ("/api", "/Bad_Name"):
            status, page = await http.call("GET", path)
            self.assertEqual((status, b"<!doctype html>" in page.lower()), (404, True), path)

    @with_server
    async def test_health_without_database(self, server: Server) -> None:
        """When the database does not answer, health says so with 503."""
        await server.store.close()
        status, body = await server.http.call("GET", "/healthz")
        self.assertEqual((status, body["status"], body["error"]["code"]),
                         (503, "unavailable", "unavailable"))
        self.flushLoggedErrors()

    @with_server
    async def test_live_needs_upgrade(self, server: Server) -> None:
        """The live endpoint answers plain HTTP with a clear 400."""
        status, body = await server.http.call("GET", ROOM + "/live")
        self.assertEqual((status, body["error"]["code"]), (400, "bad_request"))


class AccessLogTests(SynchronousTestCase):
    def test_no_query_strings(self) -> None:
        """
        The access log is one structured event per request: the path, never the query
        string (tokens travel in them), nor the referrer's.
        """
        request = DummyRequest([b"api"])
        request.uri = b"/api/v1/rooms/x/live?token=s3cret&since=4"
        request.code, request.sentLength = 200, 0
        request.requestHeaders.setRawHeaders(b"referer", [b"http://h/x?token=s3cret"])
        with capturedLogs() as events:
            MeasuredSite(Resource(), Metrics()).log(request)
        [event] = events
        line = '"-" - - "GET /api/v1/rooms/x/live HTTP/1.0" 200 0 "http://h/x" "-"'
        self.assertEqual((formatEvent(event), json.loads(json_line(event))["text"]), (line, line))
        self.assertEqual((event["path"], event["status"], event["referer"], event["route"]),
                         ("/api/v1/rooms/x/live", 200, "http://h/x", "unmatched"))
        self.assertNotIn("s3cret", formatEvent(event) + json_line(event))


class FormBodyTests(SynchronousTestCase):
    def test_form_never_parsed(self) -> None:
        """A form body stays a body: C{request.args} holds the query string's arguments only."""
        for content_type, body in (
                (b"application/x-www-form-urlencoded", b"after=5&token=x"),
                (b"multipart/form-data; boundary=b",
                 b'--b\r\nContent-Disposition: form-data; name="after"\r\n\r\n5\r\n--b--\r\n')):
            request = LimitedRequest(DummyChannel())
            request.process = lambda: None  # type: ignore[method-assign]
            request.requestHeaders.setRawHeaders(b"content-type", [content_type])
            request.gotLength(len(body))
            request.handleContentChunk(body)
            request.requestReceived(b"POST", b"/api/v1/rooms/x/messages?limit=2", b"HTTP/1.1")
            self.assertEqual(request.args, {b"limit": [b"2"]})
            self.assertEqual(request.content.read(), body)
