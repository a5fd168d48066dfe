"""
HTTP at its edges, written byte for byte on real connections: bodies of the wrong
type, too long (chunked too), not UTF-8 or nested too deep; paths that climb out of
the static directory; headers too large; unknown methods, HEAD and OPTIONS; and a
websocket handshake that fails. Each gets a precise 4xx (with the API's error body
where the API answers), nothing is served that should not be, nothing is logged as
an unhandled error (trial fails a test that logs one), and the daemon keeps serving.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.server import Server
from tests.test_web import with_server
from tmd.web.request import MAX_BODY

TIMEOUT = 10
ROOMS = "/api/v1/rooms"


class Response:
    """A raw HTTP response: status, headers (lower-case names) and body."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1]) if status_line else 0
        self.headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.headers.get("transfer-encoding") == "chunked":
            self.body = dechunk(self.body)

    def json(self) -> Any:
        return json.loads(self.body)

    def error_code(self) -> str:
        """The API error body's code (fails unless the body is one)."""
        assert self.headers.get("content-type", "").startswith("application/json"), self.raw
        body = self.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        return str(body["error"]["code"])


def dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        length = int(size, 16)
        body, data = body + data[:length], data[length + 2:]
    return body


class _Collect(Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.done.callback(self.data)


async def raw(server: Server, request: bytes) -> Response:
    """Send C{request} as is (with C{Connection: close}); the whole answer once closed."""
    collect = _Collect(request)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), collect)
    return Response(await collect.done.addTimeout(TIMEOUT, reactor))


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    if body and not any(h.lower().startswith("transfer-encoding") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def post_room(body: bytes, content_type: str = "application/json") -> bytes:
    return request("POST", ROOMS, f"Content-Type: {content_type}", body=body)


def chunked(data: bytes, size: int = 8192) -> bytes:
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


class BodyTests(TestCase):
    @with_server
    async def test_content_type(self, server: Server) -> None:
        """Only JSON is taken: other types and none are 415, with parameters it is fine."""
        form = b'--x\r\nContent-Disposition: form-data; name="name"\r\n\r\na-room\r\n--x--\r\n'
        for content_type, body in (("text/plain", b'{"name":"a-room"}'),
                                   ("application/jsonp", b'{"name":"a-room"}'),
                                   ("application/x-www-form-urlencoded", b"name=a-room"),
                                   ("multipart/form-data; boundary=x", form)):
            answer = await raw(server, post_room(body, content_type))
            self.assertEqual((answer.status, answer.error_code()), (415, "bad_request"))
        answer = await raw(server, request("POST", ROOMS, body=b'{"name":"a-room"}'))
        self.assertEqual((answer.status, answer.error_code()), (415, "bad_request"))
        answer = await raw(server, post_room(b'{"name":"a-room"}',
                                             "Application/JSON; charset=utf-8"))
        self.assertEqual(answer.status, 201)

    @with_server
    async def test_too_large(self, server: Server) -> None:
        """Past 64 KiB a body is refused with 413, whether sized or chunked."""
        big = b'{"name":"big-room","title":"' + b"x" * MAX_BODY + b'"}'
        answer = await raw(server, post_room(big))
        self.assertEqual((answer.status, answer.error_code()), (413, "payload_too_large"))
        answer = await raw(server, request("POST", ROOMS, "Content-Type: application/json",
                                           "Transfer-Encoding: chunked", body=chunked(big)))
        self.assertEqual((answer.status, answer.error_code()), (413, "payload_too_large"))
        small = b'{"name":"chunked-room"}'
        answer = await raw(server, request("POST", ROOMS, "Content-Type: application/json",
                                           "Transfer-Encoding: chunked", body=chunked(small, 5)))
        self.assertEqual(answer.status, 201)

    @with_server
    async def test_malformed(self, server: Server) -> None:
        """Not UTF-8, not JSON, not an object, numbers past reason, nesting past the stack: 400."""
        for body in (b'{"name":"\xff\xfe"}', b"\xef\xbb\xbf{}", b"{", b"[]", b'"name"',
                     b'{"name":' + b"9" * 5000 + b"}", b"[" * 100_000 + b"]" * 100_000,
                     b'{"a":' * 20_000 + b"1" + b"}" * 20_000):
            answer = await raw(server, post_room(body[:MAX_BODY]))
            self.assertEqual((answer.status, answer.error_code()), (400, "bad_request"),
                             body[:40])
        answer = await raw(server, post_room(b'{"name":"nested-room","max_length":100.0}'))
        self.assertEqual((answer.status, answer.json()["room"]["max_length"]), (201, 100))

    @with_server
    async def test_framing(self, server: Server) -> None:
        """
        Requests whose framing is ambiguous (request smuggling) or whose headers are
        too large are refused by the HTTP layer before any route, and the connection
        is closed; the next request is served.
        """
        answer = await raw(server, request(
            "POST", ROOMS, "Content-Type: application/json", "Content-Length: 4",
            "Transfer-Encoding: chunked", body=b"0\r\n\r\n"))
        self.assertEqual(answer.status, 400)
        answer = await raw(server, request("POST", ROOMS, "Content-Length: 2",
                                           "Content-Length: 3", body=b"{}"))
        self.assertEqual(answer.status, 400)
        answer = await raw(server, request("GET", "/healthz", "X-Big: " + "a" * 17_000))
        self.assertIn(answer.status, (0, 400))  # 400, or reset while the rest is unread
        answer = await raw(server, request("GET", "/healthz"))
        self.assertEqual(answer.status, 200)


class PathTests(TestCase):
    @with_server
    async def test_traversal(self, server: Server) -> None:
        """No spelling of '..' reaches a file outside the static directory."""
        for path in ("/static/../setup.cfg", "/static/%2e%2e/setup.cfg",
                     "/static/%2E%2E%2Fsetup.cfg", "/static/..%2fsetup.cfg",
                     "/static/..%5csetup.cfg", "/static/..\\setup.cfg",
                     "/static/%252e%252e/setup.cfg", "/static/js/../../setup.cfg",
                     "/static/.%2e/.%2e/setup.cfg", "/static//etc/passwd",
                     "/static/%2fetc%2fpasswd", "/static/%00", "/static/js/%00.js",
                     "/static/..;/setup.cfg", "/static/%c0%ae%c0%ae/setup.cfg"):
            answer = await raw(server, request("GET", path))
            if answer.status == 308:  # '//' merged: still inside /static/
                self.assertTrue(answer.headers["location"].startswith("/static/"), path)
            else:
                self.assertIn(answer.status, (400, 404), (path, answer.raw[:300]))
            self.assertNotIn(b"[metadata]", answer.body, path)
            self.assertNotIn(b"root:", answer.body, path)
        answer = await raw(server, request("GET", "/static/js/room.js"))
        self.assertEqual(answer.status, 200)

    @with_server
    async def test_not_utf8(self, server: Server) -> None:
        """A path or host that is not UTF-8 is the API's 400, without a traceback in the log."""
        for path, host in (("/api/v1/rooms/%ff%fe", "127.0.0.1"), ("/%c3%28", "127.0.0.1"),
                           ("/healthz", "\xff.example")):
            answer = await raw(server, request("GET", path, f"X-Host: {host}").replace(
                b"Host: 127.0.0.1", f"Host: {host}".encode("latin-1")))
            self.assertEqual((answer.status, answer.error_code()), (400, "bad_request"), path)


class MethodTests(TestCase):
    @with_server
    async def test_unknown_methods(self, server: Server) -> None:
        """Methods a path does not take are 405 with Allow and the API's error body."""
        for method, path in (("FOO", ROOMS), ("TRACE", "/"), ("PUT", "/healthz"),
                             ("DELETE", "/static/js/room.js"), ("PROPFIND", "/api/v1/rooms/x")):
            answer = await raw(server, request(method, path))
            self.assertEqual((answer.status, answer.error_code()), (405, "method_not_allowed"),
                             (method, path))
            self.assertTrue(answer.headers["allow"], (method, path))

    @with_server
    async def test_head(self, server: Server) -> None:
        """HEAD is GET without the body: the same status and headers, nothing after them."""
        await server.room_with("physics-101")
        for path in ("/", "/healthz", "/api/v1/rooms/physics-101", "/static/js/room.js",
                     "/api/v1/rooms/nowhere"):
            got, head = (await raw(server, request("GET", path)),
                         await raw(server, request("HEAD", path)))
            self.assertEqual((head.status, head.body), (got.status, b""), path)
            self.assertEqual(head.headers.get("content-type"), got.headers.get("content-type"))

    @with_server
    async def test_options(self, server: Server) -> None:
        """OPTIONS says what a path allows (204 and Allow), and grants no cross-site access."""
        for path, methods in ((ROOMS, {"POST"}), ("/api/v1/rooms/x", {"GET", "PATCH", "DELETE"}),
                              ("/healthz", {"GET"})):
            answer = await raw(server, request(
                "OPTIONS", path, "Origin: http://evil.example",
                "Access-Control-Request-Method: POST"))
            self.assertEqual((answer.status, answer.body), (204, b""), path)
            allowed = {m.strip() for m in answer.headers["allow"].split(",")}
            self.assertLessEqual(methods | {"OPTIONS"}, allowed, path)
            self.assertFalse([h for h in answer.headers if h.startswith("access-control-")])


class HandshakeTests(TestCase):
    @with_server
    async def test_failed_handshake(self, server: Server) -> None:
        """A websocket handshake that fails is an ordinary 400 with the API's error body."""
        await server.room_with("physics-101")
        live = "/api/v1/rooms/physics-101/live"
        for headers in (("Upgrade: websocket",),
                        ("Upgrade: websocket", "Connection: Upgrade",
                         "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: short"),
                        ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 99",
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")):
            answer = await raw(server, request("GET", live, *headers))
            self.assertEqual((answer.status, answer.error_code()), (400, "bad_request"), headers)
            self.assertEqual(len(answer.body), int(answer.headers["content-length"]))
        answer = await raw(server, request("GET", live))
        self.assertEqual((answer.status, answer.error_code()), (400, "bad_request"))


class BoundsTests(TestCase):
    @with_server
    async def test_null_is_absent(self, server: Server) -> None:
        """In a change, a null field is one left out: the room keeps its value."""
        tokens = await server.room_with("physics-101", title="Physics", hashtags=["#phys"])
        code, room = await server.http.call(
            "PATCH", "/api/v1/rooms/physics-101",
            {"title": None, "hashtags": None, "lifetime": None, "state": None}, tokens["owner"])
        self.assertEqual((code, room["title"], room["hashtags"], room["state"]),
                         (200, "Physics", ["#phys"], "open"))
        code, _ = await server.http.call("POST", ROOMS, {"name": "another", "max_length": None})
        self.assertEqual(code, 201)

    @with_server
    async def test_seq_bounds(self, server: Server) -> None:
        """A seq a client names is below 2**62 everywhere, and a bad one is refused even unused."""
        await server.room_with("physics-101")
        room = "/api/v1/rooms/physics-101"
        code, _ = await server.http.call("GET", f"{room}/messages?after={2**62 - 1}")
        self.assertEqual(code, 200)
        for path, resume in ((f"{room}/messages?after={2**62}", "1"),
                             (f"{room}/events?since={2**62}", "1"), (f"{room}/events", "")):
            code, body = await server.http.call("GET", path, headers={"Last-Event-ID": [resume]})
            self.assertEqual((code, body["error"]["code"]), (400, "bad_request"), path)

    @with_server
    async def test_flags(self, server: Server) -> None:
        """A flag is true or false, nothing else; the transcript's stats are the owner's."""
        tokens = await server.room_with("physics-101", "ada")
        transcript = "/api/v1/rooms/physics-101/transcript"
        for flag, token, status, code in (("null", "owner", 400, "bad_request"),
                                          ("yes", "owner", 400, "bad_request"),
                                          ("true", "ada", 403, "forbidden")):
            answer, body = await server.http.call("GET", f"{transcript}?stats={flag}",
                                                  token=tokens[token])
            self.assertEqual((answer, body["error"]["code"]), (status, code), flag)
        for flag in ("true", "false"):
            answer, _ = await server.http.call("GET", f"{transcript}?stats={flag}",
                                               token=tokens["owner"])
            self.assertEqual(answer, 200, flag)
