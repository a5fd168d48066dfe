"""The transcript download over real HTTP: the four formats, who may read, and streaming."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.clients import Http
from tests.helpers import in_thread_now, open_store
from tests.server import Server, start_server
from tests.test_web import with_server
from tmd.chat import Chat
from tmd.hub import Hub
from tmd.model import Message, NewMessage, Room
from tmd.relay import Relay
from tmd.store import IStore
from tmd.web.app import WebApp
from tmd.web.events import EventStreams

PATH = "/api/v1/rooms/physics-101/transcript"
FIVE_PM = int(datetime(2026, 11, 24, 17, tzinfo=UTC).timestamp() * 1000)
EXPORTED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")


async def add(server: Server, room: str, kind: str, author: str | None, body: str,
              minutes: float = 0, source: dict[str, Any] | None = None) -> Message:
    """Store a message straight away (any kind, any text, at a chosen time)."""
    return await server.store.post(await server.chat.room(room), NewMessage(
        kind=kind, author=author, participant_id=None, body=body,
        created_at=FIVE_PM + int(minutes * 60_000), source=source))


async def physics_101(server: Server) -> dict[str, str]:
    """Room physics-101 with one message of each kind; returns the tokens."""
    tokens = await server.room_with("physics-101", "ada", title="Physics 101")
    await add(server, "physics-101", "chat", "ada", "Is light a wave?")
    await add(server, "physics-101", "chat", "bob", "Both:\nwave and\nparticle.", 0.5)
    await add(server, "physics-101", "social", "@grace", "Photons!", 1, {
        "network": "mastodon", "id": "7", "url": "https://mastodon.social/@grace/7"})
    await add(server, "physics-101", "system", None, "The room is paused.", 2)
    return tokens


def header(http: Http, name: str) -> list[str] | None:
    """A header of the last response C{http} received."""
    return http.last_headers.getRawHeaders(name)


class FormatTests(TestCase):
    def assert_download(self, http: Http, content_type: str, extension: str) -> None:
        self.assertEqual(header(http, "content-type"), [content_type])
        self.assertEqual(header(http, "content-disposition"),
                         [f'attachment; filename="physics-101-transcript.{extension}"'])
        self.assertEqual(header(http, "cache-control"), ["no-store"])

    @with_server
    async def test_text(self, server: Server) -> None:
        """The default: a header, one line per message, continuation lines indented."""
        http = server.http
        await physics_101(server)
        status, body = await http.call("GET", PATH)
        self.assertEqual(status, 200)
        self.assert_download(http, "text/plain; charset=utf-8", "txt")
        head, lines = body.decode("utf-8").split("\n\n", 1)
        title, room, exported, utc = head.split("\n")
        self.assertEqual((title, room, utc), ("Physics 101", "Room: physics-101",
                                              "All times are UTC."))
        self.assertRegex(exported, "^Exported: " + EXPORTED.pattern + "$")
        self.assertEqual(lines, (
            "[2026-11-24 17:00:00Z] ada: Is light a wave?\n"
            "[2026-11-24 17:00:30Z] bob: Both:\n"
            "    wave and\n"
            "    particle.\n"
            "[2026-11-24 17:01:00Z] @grace (https://mastodon.social/@grace/7): Photons!\n"
            "[2026-11-24 17:02:00Z] * The room is paused.\n"))
        status, body = await http.call("GET", PATH + "?format=txt")
        self.assertEqual((status, body.decode("utf-8").endswith(lines)), (200, True))

    @with_server
    async def test_json(self, server: Server) -> None:
        """The room and its messages, exactly as the API shows them elsewhere."""
        await physics_101(server)
        http = server.http
        status, transcript = await http.call("GET", PATH + "?format=json")
        self.assertEqual(status, 200)
        self.assert_download(http, "application/json; charset=utf-8", "json")
        _, room = await http.call("GET", "/api/v1/rooms/physics-101")
        _, page = await http.call("GET", "/api/v1/rooms/physics-101/messages")
        self.assertEqual(transcript, {"room": room, "messages": page["messages"]})
        self.assertEqual([m["kind"] for m in transcript["messages"]],
                         ["chat", "chat", "social", "system"])

    @with_server
    async def test_json_empty_room(self, server: Server) -> None:
        """A room without messages is still valid JSON."""
        http = server.http
        await server.room_with("physics-101")
        status, transcript = await http.call("GET", PATH + "?format=json")
        self.assertEqual((status, transcript["room"]["name"], transcript["messages"]),
                         (200, "physics-101", []))

    @with_server
    async def test_csv(self, server: Server) -> None:
        """A header row, then one row per message; commas, quotes and lines survive."""
        http = server.http
        await physics_101(server)
        await add(server, "physics-101", "chat", "ada", 'a, "quoted"\nline', 3)
        status, body = await http.call("GET", PATH + "?format=csv")
        self.assertEqual(status, 200)
        self.assert_download(http, "text/csv; charset=utf-8", "csv")
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
        self.assertEqual(rows, [
            ["seq", "created_at", "kind", "author", "body", "source_url"],
            ["1", "2026-11-24T17:00:00.000Z", "chat", "ada", "Is light a wave?", ""],
            ["2", "2026-11-24T17:00:30.000Z", "chat", "bob", "Both:\nwave and\nparticle.", ""],
            ["3", "2026-11-24T17:01:00.000Z", "social", "'@grace", "Photons!",
             "https://mastodon.social/@grace/7"],
            ["4", "2026-11-24T17:02:00.000Z", "system", "", "The room is paused.", ""],
            ["5", "2026-11-24T17:03:00.000Z", "chat", "ada", 'a, "quoted"\nline', ""],
        ])

    @with_server
    async def test_csv_formulas(self, server: Server) -> None:
        """A cell a spreadsheet would run as a formula starts with an apostrophe instead."""
        http = server.http
        await server.room_with("physics-101")
        attacks = ["=HYPERLINK(\"http://evil\")", "+1+1", "-2+3", "@SUM(A1:A9)", "\t=1",
                   "\r=1"]
        for body in attacks:
            await add(server, "physics-101", "chat", "=cmd|' /C calc'!A0", body)
        await add(server, "physics-101", "chat", "ada", "1 + 1 = 2")
        status, body = await http.call("GET", PATH + "?format=csv")
        self.assertEqual(status, 200)
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))[1:]
        self.assertEqual([row[4] for row in rows], ["'" + a for a in attacks] + ["1 + 1 = 2"])
        self.assertEqual({row[3] for row in rows[:-1]}, {"'=cmd|' /C calc'!A0"})
        self.assertEqual(rows[-1][3], "ada")

    @with_server
    async def test_html(self, server: Server) -> None:
        """A standalone, printable page of the transcript, with its own strict CSP."""
        http = server.http
        await physics_101(server)
        status, body = await http.call("GET", PATH + "?format=html")
        self.assertEqual(status, 200)
        self.assert_download(http, "text/html; charset=utf-8", "html")
        self.assertEqual(header(http, "content-security-policy"),
                         ["default-src 'none'; style-src 'unsafe-inline'"])
        page = body.decode("utf-8")
        self.assertTrue(page.startswith("<!doctype html>\n<html lang=\"en\">"), page[:40])
        self.assertTrue(page.endswith("</html>\n"))
        self.assertIn("<title>Physics 101 · transcript</title>", page)
        self.assertIn("@media print", page)
        self.assertIn('<span class="author">ada</span><span class="body">Is light a wave?'
                      "</span>", page)
        self.assertIn('<span class="body">Both:\nwave and\nparticle.</span>', page)
        self.assertIn('<a class="source" href="https://mastodon.social/@grace/7"', page)
        self.assertIn('<li class="system" id="m4"><time datetime="2026-11-24T17:02:00.000Z">'
                      '2026-11-24 17:02:00Z</time><span class="body">The room is paused.'
                      "</span></li>", page)
        self.assertEqual(Tags.of(page)["li"], 4)

    @with_server
    async def test_html_escapes(self, server: Server) -> None:
        """Titles, nicknames, bodies and links cannot add markup, scripts or handlers."""
        http = server.http
        await server.room_with("physics-101", title="</title><script>alert(1)</script>")
        await add(server, "physics-101", "chat", "<script>alert(2)</script>",
                  '<img src=x onerror="alert(3)"> & </span></li></ol>')
        await add(server, "physics-101", "social", '@"><b>', "hi", 1,
                  {"network": "x", "id": "1", "url": 'https://x.com/"><script>alert(4)</script>'})
        await add(server, "physics-101", "social", "@eve", "click", 2,
                  {"network": "x", "id": "2", "url": "javascript:alert(5)"})
        status, body = await http.call("GET", PATH + "?format=html")
        page = body.decode("utf-8")
        self.assertEqual(status, 200)
        tags = Tags.of(page)
        self.assertEqual(set(tags) - {"html", "head", "meta", "title", "style", "body",
                                      "header", "h1", "p", "code", "ol", "li", "time",
                                      "span", "a"}, set())
        self.assertEqual((tags["li"], tags["a"], tags["title"]), (3, 1, 1))
        self.assertNotIn("javascript:", page)
        self.assertIn("&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;", page)
        self.assertIn("&lt;img src=x onerror=&quot;alert(3)&quot;&gt; &amp; &lt;/span&gt;",
                      page)
        self.assertIn('href="https://x.com/&quot;&gt;&lt;script&gt;alert(4)&lt;/script&gt;"',
                      page)


class Tags(HTMLParser):
    """Counts the elements of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.count: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.count[tag] = self.count.get(tag, 0) + 1
        if any(name.startswith("on") for name, _ in attrs):
            raise AssertionError(f"an event handler in <{tag}>: {attrs}")

    @classmethod
    def of(cls, page: str) -> dict[str, int]:
        parser = cls()
        parser.feed(page)
        parser.close()
        return parser.count


class AccessTests(TestCase):
    @with_server
    async def test_password_room(self, server: Server) -> None:
        """A password room's transcript needs a participant's or the owner's token."""
        http = server.http
        tokens = await server.room_with("secret-room", "ada", password="hunter2")
        await add(server, "secret-room", "chat", "ada", "psst")
        path = "/api/v1/rooms/secret-room/transcript"
        for token in (None, "wrong"):
            status, body = await http.call("GET", path, token=token)
            self.assertEqual((status, body["error"]["code"]), (401, "unauthorized"), token)
            self.assertIsNone(header(http, "content-disposition"))
        for who in ("ada", "owner"):
            status, body = await http.call("GET", path, token=tokens[who])
            self.assertEqual((status, body.endswith(b"] ada: psst\n")), (200, True), who)

    @with_server
    async def test_errors(self, server: Server) -> None:
        """An unknown format is a 400 naming the formats; an unknown room a 404."""
        http = server.http
        await server.room_with("physics-101")
        for query in ("?format=pdf", "?format=TXT", "?format=", "?format=%C3%A9"):
            status, body = await http.call("GET", PATH + query)
            self.assertEqual((status, body["error"]["code"]), (400, "bad_request"), query)
            self.assertIn("txt, json, csv, html", body["error"]["message"])
        for path in ("/api/v1/rooms/nope/transcript", "/api/v1/rooms/Bad_Name/transcript"):
            status, body = await http.call("GET", path)
            self.assertEqual((status, body["error"]["code"]), (404, "not_found"), path)
            self.assertEqual(header(http, "content-type"), ["application/json; charset=utf-8"])


class ContentTests(TestCase):
    @with_server
    async def test_deleted_left_out(self, server: Server) -> None:
        """Deleted messages are in no format."""
        tokens = await server.room_with("physics-101", "ada")
        for body in ("keep one", "oops, my password", "keep two"):
            await server.chat.post("physics-101", tokens["ada"], {"body": body})
        await server.chat.delete_message("physics-101", tokens["owner"], 2)
        http = server.http
        _, transcript = await http.call("GET", PATH + "?format=json")
        self.assertEqual([m["seq"] for m in transcript["messages"]], [1, 3])
        for fmt in ("txt", "csv", "html"):
            status, body = await http.call("GET", PATH + "?format=" + fmt)
            self.assertEqual((status, b"keep two" in body, b"oops" in body), (200, True, False),
                             fmt)

    @with_server
    async def test_many_pages(self, server: Server) -> None:
        """A transcript of several pages is whole and in order, at page boundaries too."""
        await server.room_with("physics-101")
        for i in range(1, 1001):
            await add(server, "physics-101", "chat", "ada", f"m{i}", i / 60)
        await self.assert_seqs(server, list(range(1, 1001)))  # exactly one full page
        for i in range(1001, 2502):
            await add(server, "physics-101", "chat", "ada", f"m{i}", i / 60)
        room = await server.chat.room("physics-101")
        for seq in (1000, 1001, 2000):
            await server.store.delete_message(room, seq)
        expected = [seq for seq in range(1, 2502) if seq not in (1000, 1001, 2000)]
        await self.assert_seqs(server, expected)

    async def assert_seqs(self, server: Server, expected: list[int]) -> None:
        """Every format holds exactly the messages C{expected}, in that order."""
        http = server.http
        _, transcript = await http.call("GET", PATH + "?format=json")
        self.assertEqual([m["seq"] for m in transcript["messages"]], expected)
        self.assertEqual([m["body"] for m in transcript["messages"]],
                         [f"m{seq}" for seq in expected])
        _, text = await http.call("GET", PATH)
        bodies = re.findall(r"^\[[^]]+\] ada: m(\d+)$", text.decode("utf-8"), re.MULTILINE)
        self.assertEqual([int(seq) for seq in bodies], expected)
        _, table = await http.call("GET", PATH + "?format=csv")
        rows = list(csv.reader(io.StringIO(table.decode("utf-8"), newline="")))[1:]
        self.assertEqual([int(row[0]) for row in rows], expected)
        _, page = await http.call("GET", PATH + "?format=html")
        self.assertEqual(Tags.of(page.decode("utf-8")).get("li", 0), len(expected))


class HeldPages:
    """The store, except that each page of messages waits until the test releases it."""

    def __init__(self, store: IStore) -> None:
        self._store = store
        self.asked: list[int] = []
        """The C{after} of every page asked for."""
        self.cancelled: Deferred[int] = Deferred()
        """Fires with a page's C{after} when the reader gives up waiting for it."""
        self._waiting: tuple[Deferred[Any], Room, int, int] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def messages(self, room: Room, after: int, limit: int) -> Deferred[Any]:
        self.asked.append(after)
        page: Deferred[Any] = Deferred(lambda _: self.cancelled.callback(after))
        self._waiting = (page, room, after, limit)
        return page

    def release(self) -> None:
        """Let the page asked for last through."""
        assert self._waiting is not None
        page, room, after, limit = self._waiting
        self._store.messages(room, after, limit).chainDeferred(page)


class Reader(Protocol):
    """A client that reads a response until it has seen C{until}."""

    def __init__(self, until: bytes) -> None:
        self._until = until
        self.received = b""
        self.seen: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self._until in self.received and not self.seen.called:
            self.seen.callback(self.received)


class StreamingTests(TestCase):
    def test_client_hangs_up(self) -> Deferred[None]:
        """The head goes out before the first page is read; a client that leaves stops it."""

        async def go() -> None:
            pages = HeldPages(open_store(self))
            server = await start_server(self, pages)  # type: ignore[arg-type]
            await server.room_with("physics-101")
            reader = Reader(b"All times are UTC.\n\n")
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), reader)
            assert reader.transport is not None
            reader.transport.write(f"GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            received = await reader.seen.addTimeout(15, reactor)
            self.assertIn(b"200 OK", received)
            self.assertEqual(pages.asked, [0])
            reader.transport.loseConnection()
            self.assertEqual(await pages.cancelled.addTimeout(15, reactor), 0)
            status, _ = await server.http.call("GET", "/healthz")  # the server is still fine
            self.assertEqual((status, pages.asked), (200, [0]))

        return Deferred.fromCoroutine(go())


class BackPressureTests(SynchronousTestCase):
    """The download waits while the client's buffer is full (here: on a string transport)."""

    def test_waits_while_paused(self) -> None:
        store = HeldPages(open_store(self))
        hub = Hub(Clock())
        chat = Chat(store, hub, Clock(), in_thread_now)  # type: ignore[arg-type]
        room, _ = self.successResultOf(chat.create_room({"name": "physics-101"}))
        self.successResultOf(store.post(room, NewMessage(
            kind="chat", author="ada", participant_id=None, body="Is light a wave?",
            created_at=FIVE_PM)))
        site = Site(WebApp(chat, store, Resource(), Path(),  # type: ignore[arg-type]
                           Relay(store, Clock()),  # type: ignore[arg-type]
                           events=EventStreams(chat, hub, Clock())).app.resource(),
                    reactor=Clock())
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 80))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(f"GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.assertIn(b"All times are UTC.", transport.value())
        self.assertEqual(store.asked, [0])

        channel_producer = transport.producer
        assert channel_producer is not None
        channel_producer.pauseProducing()  # as the transport does when its buffer is full
        store.release()
        self.assertNotIn(b"wave", transport.value())
        channel_producer.resumeProducing()
        self.assertIn(b"] ada: Is light a wave?\n", transport.value())
        self.assertTrue(transport.value().endswith(b"\r\n0\r\n\r\n"))  # the last chunk
        self.assertEqual(store.asked, [0])
