"""The projector view over real HTTP: the room's QR code and the page at /NAME/present."""

from __future__ import annotations

import io
from typing import Any
from xml.etree import ElementTree

import segno
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.clients import Http
from tests.server import Server, start_server
from tests.test_web import with_server

QR = "/api/v1/rooms/physics-101/qr.svg"
SVG = "{http://www.w3.org/2000/svg}"


def segno_svg(url: str) -> bytes:
    """What segno itself makes of C{url}, with the settings the server promises."""
    out = io.BytesIO()
    segno.make_qr(url, error="m").save(
        out, kind="svg", scale=1, border=4, dark="#000", light="#fff", xmldecl=False,
        omitsize=True, title=f"Join at {url}", nl=False)
    return out.getvalue()


class QrCodeTests(TestCase):
    async def qr(self, http: Http, path: str = QR, **headers: str) -> tuple[int, Any]:
        status, body = await http.call(
            "GET", path, headers={name.replace("_", "-"): [value]
                                  for name, value in headers.items()})
        return status, body

    def test_public_url(self) -> Deferred[None]:
        """With --public-url, the code is that URL and the room's name, as segno makes it."""

        async def go() -> None:
            server = await start_server(self, public_url="https://chat.example.org/")
            await server.room_with("physics-101")
            http = server.http
            status, body = await self.qr(http, "/api/v1/rooms/Physics-101/qr.svg")
            self.assertEqual(status, 200)
            self.assertEqual(body, segno_svg("https://chat.example.org/physics-101"))
            self.assertNotEqual(body, segno_svg("https://chat.example.org/physics-102"))
            root = ElementTree.fromstring(body)  # well-formed XML, an SVG root
            self.assertEqual(root.tag, SVG + "svg")
            self.assertEqual(root.findtext(SVG + "title"),
                             "Join at https://chat.example.org/physics-101")
            self.assertRegex(root.get("viewBox") or "", r"^0 0 (\d+) \1$")
            headers = http.last_headers
            self.assertEqual(headers.getRawHeaders("content-type"), ["image/svg+xml"])
            self.assertEqual(headers.getRawHeaders("cache-control"), ["public, max-age=3600"])
            self.assertIsNone(headers.getRawHeaders("vary"))
            self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])

        return Deferred.fromCoroutine(go())

    @with_server
    async def test_request_host(self, server: Server) -> None:
        """Without --public-url, the link is built from the Host the request named."""
        http = server.http
        await server.room_with("physics-101")
        status, body = await self.qr(http, host="Chat.Example.Org:8443")
        self.assertEqual((status, body),
                         (200, segno_svg("http://chat.example.org:8443/physics-101")))
        self.assertEqual(http.last_headers.getRawHeaders("vary"), ["Host"])
        status, body = await self.qr(http, host="[::1]:8080")
        self.assertEqual((status, body), (200, segno_svg("http://[::1]:8080/physics-101")))
        for bad in ("evil.example/x", "a b", "host:port", ""):
            status, answer = await self.qr(http, host=bad)
            self.assertEqual((status, answer["error"]["code"]), (400, "bad_request"), bad)

    @with_server
    async def test_not_modified(self, server: Server) -> None:
        """A client that has the code already (its ETag) gets a 304 and no body."""
        http = server.http
        await server.room_with("physics-101")
        _, body = await self.qr(http)
        etag = http.last_headers.getRawHeaders("etag")[0]
        self.assertRegex(etag, r'^"[0-9a-f]{32}"$')
        self.assertEqual(await self.qr(http, if_none_match=etag), (304, b""))
        self.assertEqual(await self.qr(http, if_none_match='"other"'), (200, body))

    @with_server
    async def test_unknown_room(self, server: Server) -> None:
        """No room, or a name no room can have: 404 with the API's error body."""
        http = server.http
        for path in (QR, "/api/v1/rooms/Bad_Name/qr.svg", "/api/v1/rooms/api/qr.svg"):
            status, body = await self.qr(http, path)
            self.assertEqual((status, body["error"]["code"]), (404, "not_found"), path)
            self.assertIsInstance(body["error"]["message"], str)


class PresentPageTests(TestCase):
    @with_server
    async def test_page(self, server: Server) -> None:
        """
        /NAME/present is the projector page, for any name a room could have (the page
        says if there is none); for a name no room can have, the same page as a 404.
        """
        http = server.http
        await server.room_with("physics-101")
        for path in ("/physics-101/present", "/Physics-101/present", "/no-room-yet/present"):
            status, page = await http.call("GET", path)
            self.assertEqual(status, 200, path)
            self.assertIn(b'src="/static/js/present.js"', page)
            self.assertEqual(http.last_headers.getRawHeaders("content-type"),
                             ["text/html; charset=utf-8"])
            self.assertIn(b"script-src 'self'",
                          http.last_headers.getRawHeaders("content-security-policy")[0].encode())
        status, page = await http.call("GET", "/Bad_Name/present")
        self.assertEqual((status, b"present.js" in page), (404, True))
        for asset in ("/static/js/present.js", "/static/css/present.css"):
            status, _ = await http.call("GET", asset)
            self.assertEqual(status, 200, asset)
