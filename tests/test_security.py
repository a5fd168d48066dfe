"""Security headers on every response, and the websocket Origin check over real sockets."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.clients import LiveClient, connect, count
from tests.server import Server, start_server
from tmd.config import Config
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
