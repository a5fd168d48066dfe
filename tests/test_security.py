"""
Security: headers on every response, the websocket Origin check (cross-site websocket
hijacking) over real sockets, tokens (their size, storage and comparison), password
guessing bounded by the join limit, and no secret in any log line or error body,
hostile requests included.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.clients import LiveClient, connect, count
from tests.server import Server, start_server
from tests.test_fuzz_ws import cancel_close_timers
from tests.test_http_edges import raw, request
from tmd.config import Config
from tmd.limits import Limits, Rate, RateLimiter
from tmd.origins import origin, origin_allowed
from tmd.tap import live_origins
from tmd.web.request import SECURITY_HEADERS

ROOM = "/api/v1/rooms/physics-101"


class OriginTests(SynchronousTestCase):
    def test_origin(self) -> None:
        """Origins are normalised to scheme://host:port; anything else has none."""
        self.assertEqual(origin("https://Chat.Example.org"), "https://chat.example.org:443")
        self.assertEqual(origin("http://chat.example.org/a/b?c"), "http://chat.example.org:80")
        self.assertEqual(origin("http://[::1]:8080"), "http://::1:8080")
        for url in ("null", "", "ftp://example.org", "https://", "http://x:99999", "example.org"):
            self.assertIsNone(origin(url), url)

    def test_same_host(self) -> None:
        """With no origins configured, a page may connect only to the host it came from."""
        none: frozenset[str] = frozenset()
        self.assertTrue(origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", none))
        self.assertTrue(origin_allowed("https://chat.example.org", "chat.example.org", none))
        self.assertTrue(origin_allowed("http://Chat.example.org", "chat.EXAMPLE.org:80", none))
        for sent, host in [("http://evil.example", "chat.example.org"),
                           ("http://127.0.0.1:9999", "127.0.0.1:8080"),
                           ("https://chat.example.org", "chat.example.org:8443"),
                           ("null", "chat.example.org"),
                           ("http://chat.example.org", None)]:
            self.assertFalse(origin_allowed(sent, host, none), (sent, host))

    def test_configured(self) -> None:
        """Configured origins replace the same-host rule; clients without Origin pass."""
        allowed = frozenset({"https://chat.example.org:443"})
        self.assertTrue(origin_allowed("https://chat.example.org", "10.0.0.2:8080", allowed))
        self.assertFalse(origin_allowed("http://10.0.0.2:8080", "10.0.0.2:8080", allowed))
        self.assertTrue(origin_allowed(None, "anything", allowed))

    def test_live_origins(self) -> None:
        """The daemon allows --allow-origin origins and public_url's."""
        config = Config(public_url="https://chat.example.org/",
                        allowed_origins=("http://localhost:8080",))
        self.assertEqual(live_origins(config),
                         {"https://chat.example.org:443", "http://localhost:8080"})
        self.assertEqual(live_origins(Config()), frozenset())


class LiveOriginTests(TestCase):
    async def setUp(self) -> None:
        self.server: Server = await start_server(self)
        await self.server.room_with("physics-101")

    async def refused(self, sent: str) -> LiveClient:
        client = await connect(self.server.port, f"{ROOM}/live", origin=sent)
        self.assertEqual(await client.closed, 1008)
        self.assertEqual([(f["type"], f["code"]) for f in client.frames], [("error", "forbidden")])
        return client

    async def test_same_host(self) -> None:
        """A page from the daemon's own host gets the welcome; a foreign page gets 1008."""
        own = await connect(self.server.port, f"{ROOM}/live",
                            origin=f"http://127.0.0.1:{self.server.port}")
        await own.wait_for(count("welcome", 1))
        await self.refused("http://evil.example")
        await self.refused(f"http://localhost:{self.server.port}")  # another name, another origin
        for spoof in (f"http://127.0.0.1:{self.server.port}.evil.example",
                      f"http://127.0.0.1:{self.server.port}@evil.example",
                      "null",
                      f"http://127.0.0.1:{self.server.port + 1}", "http://127.0.0.1"):
            try:
                await self.refused(spoof)
            except ConnectionError:  # Autobahn finds no origin in it: the handshake's 400
                pass

    async def test_configured(self) -> None:
        """With origins configured, only those pages connect."""
        self.server.web.live.origins = frozenset({"https://chat.example.org:443"})
        allowed = await connect(self.server.port, f"{ROOM}/live", origin="https://chat.example.org")
        await allowed.wait_for(count("welcome", 1))
        await self.refused(f"http://127.0.0.1:{self.server.port}")


class HeaderTests(TestCase):
    async def test_every_response(self) -> None:
        """Pages, scripts, JSON and errors all carry the security headers."""
        http = (await start_server(self)).http
        for path in ("/", "/physics-101", "/static/js/room.js", "/healthz", ROOM,
                     "/static/../setup.cfg", "/api/v1/openapi.json"):
            await http.call("GET", path)
            for name, value in SECURITY_HEADERS.items():
                self.assertEqual(http.last_headers.getRawHeaders(name.decode()), [value.decode()],
                                 (path, name))
        csp = SECURITY_HEADERS[b"Content-Security-Policy"].decode()
        self.assertIn("frame-ancestors 'none'", csp)
        self.assertNotIn("unsafe", csp)


TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def token_bits(token: str) -> int:
    """The random bits in a URL-safe base64 token."""
    assert TOKEN.fullmatch(token), token
    return len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8


class TokenTests(TestCase):
    async def test_tokens(self) -> None:
        """
        Owner and participant tokens carry 256 random bits (at least 128 are wanted),
        never repeat, are kept only as SHA-256 hashes (the database file holds none
        of them), and one character off is refused like any other wrong token.
        """
        server = await start_server(self)
        issued = []
        for i in range(20):
            tokens = await server.room_with(f"room-{i}", "ada", "bob")
            issued += tokens.values()
        self.assertEqual(len(set(issued)), len(issued))
        self.assertEqual({token_bits(t) for t in issued}, {256})
        database = Path(server.store._path).read_bytes()  # type: ignore[attr-defined]
        for suffix in ("", "-wal"):
            path = Path(server.store._path + suffix)  # type: ignore[attr-defined]
            data = path.read_bytes() if path.exists() else b""
            self.assertFalse([t for t in issued if t.encode() in data + database], path)

        owner = issued[0]
        near = owner[:-1] + ("A" if owner[-1] != "A" else "B")
        code, body = await server.http.call("PATCH", "/api/v1/rooms/room-0", {"title": "x"},
                                            near)
        self.assertEqual((code, body["error"]["code"]), (403, "forbidden"))
        code, body = await server.http.call("POST", "/api/v1/rooms/room-0/messages",
                                            {"body": "hi"}, near)
        self.assertEqual((code, body["error"]["code"]), (401, "unauthorized"))

    def test_constant_time(self) -> None:
        """
        The owner token is compared as a SHA-256 digest with C{hmac.compare_digest};
        participant tokens are looked up by their digest, so timing tells at most
        something about a hash, nothing about a token.
        """
        from tmd import chat

        source = Path(chat.__file__).read_text()
        self.assertIn("hmac.compare_digest(tokens.token_hash(token),", source)
        self.assertNotRegex(source, r"token\s*==|==\s*token|owner_token_hash\s*==")


class GuessingTests(TestCase):
    async def test_password_guessing(self) -> None:
        """
        Wrong passwords cost a join from the address's budget, whichever room they
        try: guessing (or trying one password on many rooms) stops at the limit, with
        429 and Retry-After, and the refusal says nothing about the password.
        """
        limiter = RateLimiter(Limits(None, None, Rate(5, 60), None), Clock())
        server = await start_server(self, limiter=limiter)
        http = server.http
        for name in ("locked-a", "locked-b"):
            await server.room_with(name, password="correct horse")
        answers = []
        for attempt in range(7):
            room = "locked-a" if attempt % 2 else "locked-b"
            code, body = await http.call("POST", f"/api/v1/rooms/{room}/join",
                                                {"nickname": f"n{attempt}",
                                                 "password": f"guess {attempt}"})
            answers.append((code, body["error"]["code"]))
            self.assertNotIn("guess", body["error"]["message"])
        self.assertEqual(answers, [(401, "unauthorized")] * 5 + [(429, "rate_limited")] * 2)
        self.assertTrue(http.last_headers.getRawHeaders("retry-after"))
        code, body = await http.call("POST", "/api/v1/rooms/locked-a/join",
                                            {"nickname": "ada", "password": "correct horse"})
        self.assertEqual(code, 429)  # the right one too, until the budget refills

    async def test_names_are_public(self) -> None:
        """
        A room's name is its address (people type it), so whether a name is taken is
        public: a missing room is 404 for every route alike, and a password room shows
        nothing but its metadata without a token.
        """
        server = await start_server(self)
        await server.room_with("locked", password="correct horse")
        for path in ("/api/v1/rooms/locked/messages", "/api/v1/rooms/locked/transcript",
                     "/api/v1/rooms/locked/events"):
            code, body = await server.http.call("GET", path)
            self.assertEqual((code, body["error"]["code"]), (401, "unauthorized"), path)
            code, body = await server.http.call("GET", path.replace("locked", "nowhere"))
            self.assertEqual((code, body["error"]["code"]), (404, "not_found"), path)


class SecretsTests(TestCase):
    async def test_no_secret_in_logs_or_errors(self) -> None:
        """
        Tokens and passwords sent in hostile or broken requests (wrong places, failed
        websocket handshakes, protocol violations, bad bodies) appear in no log event
        and in no response.
        """
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        server = await start_server(self)
        self.addCleanup(cancel_close_timers, server)
        tokens = await server.room_with("physics-101", "ada", password="pass-5ecret")
        secrets = [tokens["owner"], tokens["ada"], "pass-5ecret"]
        live = "/api/v1/rooms/physics-101/live"
        answers = [await raw(server, r) for r in (
            request("GET", f"{live}?token={tokens['ada']}", "Upgrade: websocket",
                    "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                    f"Sec-WebSocket-Key: {tokens['ada'][:10]}"),
            request("GET", f"{live}?token={tokens['owner']}&since=x", "Upgrade: websocket"),
            request("GET", f"/api/v1/rooms/physics-101/messages?token={tokens['ada']}",
                    f"Authorization: Bearer{tokens['ada']}",
                    f"Referer: http://x.example/?t={tokens['owner']}"),
            request("POST", "/api/v1/rooms/physics-101/join", "Content-Type: application/json",
                    body=b'{"nickname": "eve", "password": "pass-5ecret-not"}'),
            request("POST", "/api/v1/rooms/physics-101/messages",
                    "Content-Type: application/json",
                    f"Authorization: Bearer {tokens['owner']}",
                    body=b'{"body": "pass-5ecret", "x": ' + b"[" * 5000 + b"}"),
            request("PATCH", "/api/v1/rooms/physics-101", "Content-Type: application/json",
                    f"Authorization: Basic {tokens['owner']}", body=b"{}"),
        )]
        self.assertEqual([a.status for a in answers], [400, 400, 401, 401, 400, 401])
        client = await connect(server.port, f"{live}?token={tokens['ada']}")
        await client.wait_for(count("welcome", 1))
        client.sendMessage(b"\xff" + tokens["owner"].encode(), isBinary=False)
        await client.closed
        logged = "\n".join(formatEvent(e) + repr(e) for e in events)
        self.assertIn("failing WebSocket", logged)  # the hostile requests were logged
        for secret in secrets:
            self.assertNotIn(secret, logged)
            for answer in answers:
                self.assertNotIn(secret.encode(), answer.body)


