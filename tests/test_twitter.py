"""
Tests for the Twitter/X source (L{tmd.plugins.twitter}) against a fake X API on a
loopback port: rules kept in step with the rooms, posts routed to rooms, and the
stream's troubles (stalls, cuts, disconnect messages, 429, 401) handled. The
source's clock is a L{task.Clock}; only the network is real.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from tests.fake_twitter import OPERATIONAL_DISCONNECT, FakeTwitter, tweet
from tests.helpers import ImmediateReactor, eventually, in_thread_now, open_store
from tests.loopback import TrackedSite, listen
from tmd.chat import Chat
from tmd.config import Config
from tmd.hub import Hub
from tmd.model import Message, Room
from tmd.pluginhost import PluginContext
from tmd.plugins.twitter import TwitterOptions, TwitterSource, twitter, wanted_rules

START = 1_764_000_000.0
TOKEN = "the-bearer-token"


def options(*argv: str) -> TwitterOptions:
    parsed = TwitterOptions()
    parsed.parseOptions(list(argv))
    return parsed


class Messages:
    """A room's messages as the Hub publishes them, to wait for."""

    def __init__(self, hub: Hub, room: Room) -> None:
        self.queue: DeferredQueue[Message] = DeferredQueue()
        hub.subscribe(room.id, self)

    def deliver(self, event: Any) -> None:
        if event.message is not None:  # later: the test goes on once the source is done
            reactor.callLater(0, self.queue.put, event.message)  # type: ignore[attr-defined]

    def next(self) -> Deferred[Message]:
        return self.queue.get().addTimeout(5, reactor)  # type: ignore[arg-type]


class OptionsTests(SynchronousTestCase):
    def test_token(self) -> None:
        """The bearer token comes from its file (whitespace stripped) or the environment."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(" secret-one\n")
        self.assertEqual(options("--bearer-token-file", path).bearer_token, "secret-one")
        self.patch(os, "environ", {"TMD_TWITTER_BEARER_TOKEN": "secret-two"})
        parsed = options()
        self.assertEqual((parsed.bearer_token, parsed["api-url"], parsed["max-posts-per-room"]),
                         ("secret-two", "https://api.x.com", 60))
        self.assertNotIn("secret-two", str(parsed))

    def test_refused(self) -> None:
        """No token, an unreadable file or a bad URL stop the daemon at start, saying why."""
        self.patch(os, "environ", {})
        for argv, why in [((), "needs a bearer token"),
                          (("--bearer-token-file", "/nonexistent"), "Cannot read"),
                          (("--api-url", "ftp://x"), "http(s) URL")]:
            error = self.assertRaises(usage.UsageError, options, *argv)
            self.assertIn(why, str(error))

    def test_plugin(self) -> None:
        """The plugin object is found by the name C{twitter} and makes the source."""
        self.assertEqual(twitter.name, "twitter")
        self.patch(os, "environ", {"TMD_TWITTER_BEARER_TOKEN": "t"})
        source = twitter.makeService(PluginContext(None, None, None, Config(),  # type: ignore
                                                   ImmediateReactor()), options())
        self.assertIsInstance(source, TwitterSource)

    def test_wanted_rules(self) -> None:
        """One rule per distinct value, tagged with the first room wanting it."""
        def room(name: str, *tags: str) -> Room:
            return Room(id=0, name=name, title=name, state="open", created_at=0, expires_at=1,
                        max_length=280, password_hash=None, owner_token_hash=b"",
                        hashtags=tags, last_seq=0)

        self.assertEqual(wanted_rules([room("a", "#x", "#y"), room("b", "#z"),
                                       room("c", "#x", "#y")]),
                         {"tmd:room:a": "#x OR #y", "tmd:room:b": "#z"})


class TwitterTestCase(TestCase):
    timeout = 20

    async def setUp(self) -> None:
        self.fake = FakeTwitter(TOKEN)
        self.url = await self.fake.serve(self)
        self.clock = ImmediateReactor()
        self.clock.advance(START)
        self.store = open_store(self, reactor=self.clock)
        self.hub = Hub(self.clock)
        self.chat = Chat(self.store, self.hub, self.clock, in_thread_now)
        self.context = PluginContext(self.chat, self.hub, self.store, Config(), self.clock)
        self.token_file = self.mktemp()
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")

    async def create(self, name: str, *hashtags: str) -> tuple[Room, str]:
        return await self.chat.create_room({"name": name, "hashtags": list(hashtags)})

    def source(self, *argv: str, url: str | None = None,
               http: HTTPClient | None = None) -> TwitterSource:
        """A started source on the fake (stopped at the end of the test)."""
        if http is None:
            pool = HTTPConnectionPool(reactor)
            self.addCleanup(pool.closeCachedConnections)
            http = HTTPClient(Agent(reactor, pool=pool))
        source = TwitterSource(self.context, options(
            "--api-url", url or self.url, "--bearer-token-file", self.token_file, *argv), http)
        source.startService()
        self.addCleanup(source.stopService)
        return source

    async def streaming(self, *argv: str) -> tuple[TwitterSource, Any]:
        opened = self.fake.next_stream()
        source = self.source(*argv)
        stream = await opened
        await eventually(lambda: self.context.state == "connected")
        return source, stream

    def rules(self) -> set[tuple[str, str]]:
        return {(rule["tag"], rule["value"]) for rule in self.fake.rules.values()}


class RulesTests(TwitterTestCase):
    async def test_start(self) -> None:
        """
        At start, tmd's rules for rooms that are gone are deleted, those of open rooms
        with hashtags added, and other apps' rules left alone; then the stream opens.
        """
        await self.create("physics-101", "#phys101", "light")
        await self.create("untagged")
        _, owner = await self.create("closed", "#closed")
        await self.chat.update_room("closed", owner, {"state": "closed"})
        self.fake.add_rule("#gone", "tmd:room:gone")
        self.fake.add_rule("#closed", "tmd:room:closed")
        self.fake.add_rule("cats has:images", "another-app")
        await self.streaming()
        self.assertEqual(self.rules(), {("tmd:room:physics-101", "#phys101 OR #light"),
                                        ("another-app", "cats has:images")})
        self.assertEqual([method for method, _ in self.fake.calls],
                         ["GET", "POST", "POST", "GET"])
        stream_uri = self.fake.calls[-1][1]
        self.assertTrue(stream_uri.startswith("/2/tweets/search/stream?"))
        self.assertIn("expansions=author_id", stream_uri)
        self.assertIn("tweet.fields=", stream_uri)

    async def test_rooms_followed(self) -> None:
        """Rooms created, changed and closed later change the rules at the next sync."""
        source, _ = await self.streaming()
        self.assertEqual(self.rules(), set())
        _, owner = await self.create("physics-101", "#phys101")
        changed = self.fake.next_change()
        self.clock.advance(5)
        await changed
        await eventually(lambda: source._rules is not None and len(source._rules) == 1)
        self.assertEqual(self.rules(), {("tmd:room:physics-101", "#phys101")})

        await self.chat.update_room("physics-101", owner, {"hashtags": ["#optics"]})
        changed = self.fake.next_change()
        self.clock.advance(5)
        await changed  # the old rule deleted
        await self.fake.next_change()  # the new one added
        self.assertEqual(self.rules(), {("tmd:room:physics-101", "#optics")})

        await self.chat.update_room("physics-101", owner, {"state": "closed"})
        await eventually(lambda: source._syncing is None)
        changed = self.fake.next_change()
        self.clock.advance(5)
        await changed
        self.assertEqual(self.rules(), set())
        calls = len(self.fake.calls)
        self.clock.advance(5)  # nothing changed: no call to the API
        await eventually(lambda: source._syncing is None)
        self.assertEqual(len(self.fake.calls), calls)


class StreamTests(TwitterTestCase):
    async def test_posts(self) -> None:
        """
        Each post goes to the rooms its rules' tags name, as a social message with the
        author's handle, the text unescaped, and its source; a repeated post is dropped.
        """
        physics, _ = await self.create("physics-101", "#phys101")
        optics, _ = await self.create("optics", "#optics")
        into_physics, into_optics = Messages(self.hub, physics), Messages(self.hub, optics)
        source, stream = await self.streaming()
        both = ("tmd:room:physics-101", "tmd:room:optics")
        stream.send(tweet("1460323737035677698", "light &amp; waves #phys101 #optics",
                          "ada", both))
        stream.keep_alive()
        stream.send(tweet("1460323737035677698", "again", "ada", both))
        stream.send(tweet("1460323737035677699", "only optics", "grace", both[1:]))
        message = await into_physics.next()
        self.assertEqual(
            (message.kind, message.author, message.body, message.source),
            ("social", "@ada", "light & waves #phys101 #optics",
             {"network": "twitter", "id": "1460323737035677698",
              "url": "https://x.com/ada/status/1460323737035677698"}))
        self.assertEqual((await into_optics.next()).body, "light & waves #phys101 #optics")
        self.assertEqual((await into_optics.next()).author, "@grace")
        await eventually(lambda: source.ingested == 3)

    async def test_same_hashtags(self) -> None:
        """Rooms with the same hashtags share one rule (X refuses duplicates); both get posts."""
        one, _ = await self.create("one", "#phys101")
        two, _ = await self.create("two", "#phys101")
        into_one, into_two = Messages(self.hub, one), Messages(self.hub, two)
        _, stream = await self.streaming()
        self.assertEqual(self.rules(), {("tmd:room:one", "#phys101")})
        stream.send(tweet("7", "hello", tags=("tmd:room:one",)))
        self.assertEqual([(await into_one.next()).body, (await into_two.next()).body],
                         ["hello", "hello"])

    async def test_cap(self) -> None:
        """A room takes at most C{max_posts_per_room} posts an hour; the rest are counted."""
        busy, _ = await self.create("busy", "#busy")
        calm, _ = await self.create("calm", "#calm")
        into_busy, into_calm = Messages(self.hub, busy), Messages(self.hub, calm)
        source, stream = await self.streaming("--max-posts-per-room", "2")
        for id in ("1", "2", "3"):
            stream.send(tweet(id, f"post {id}", tags=("tmd:room:busy",)))
        stream.send(tweet("4", "elsewhere", tags=("tmd:room:calm",)))
        await into_calm.next()
        self.assertEqual([(await into_busy.next()).body for _ in range(2)], ["post 1", "post 2"])
        self.assertEqual(len(into_busy.queue.pending), 0)
        await eventually(lambda: (source.ingested, source.capped) == (3, 1))
        self.assertEqual(self.context.counts(),  # what /metrics shows
                         {"ingested": 3, "capped": 1, "refused": 0, "reconnects": 0})
        reopened = self.fake.next_stream()
        self.clock.advance(3600)  # silent for an hour: the stream stalled ...
        self.clock.advance(0.25)  # ... and is made again
        (await reopened).send(tweet("5", "an hour later", tags=("tmd:room:busy",)))
        self.assertEqual((await into_busy.next()).body, "an hour later")

    async def test_closed_room(self) -> None:
        """A post for a room closed since is logged and dropped; the stream goes on."""
        room, owner = await self.create("physics-101", "#phys101")
        messages = Messages(self.hub, room)
        source, stream = await self.streaming()
        await self.chat.update_room("physics-101", owner, {"state": "paused"})
        stream.send(tweet("1", "too late", tags=("tmd:room:physics-101",)))
        await eventually(lambda: source.refused == 1)
        await self.chat.update_room("physics-101", owner, {"state": "open"})
        stream.send(tweet("2", "welcome back", tags=("tmd:room:physics-101",)))
        self.assertEqual((await messages.next()).body, "welcome back")
        await eventually(lambda: source.ingested == 1)

    async def test_stall(self) -> None:
        """Thirty seconds without a byte: the connection is dropped and made again."""
        source, first = await self.streaming()
        reopened = self.fake.next_stream()
        self.clock.advance(30)
        await first.lost  # really closed
        self.assertEqual(self.context.state, "backing off")
        self.clock.advance(0.25)
        await reopened
        self.assertEqual((source.reconnects, self.context.counts()["reconnects"]), (1, 1))

    async def test_cut(self) -> None:
        """A stream cut mid-way is reconnected after a network back-off; posts flow again."""
        room, _ = await self.create("physics-101", "#phys101")
        messages = Messages(self.hub, room)
        _, first = await self.streaming()
        first.request.write(b'{"data": {"id": "1", "te')  # half a post, then nothing
        reopened = self.fake.next_stream()
        first.cut()
        await eventually(lambda: self.context.state == "backing off")
        self.assertIn("stream lost", self.context.detail or "")
        self.clock.advance(0.25)
        second = await reopened
        second.send(tweet("2", "after the cut", tags=("tmd:room:physics-101",)))
        self.assertEqual((await messages.next()).body, "after the cut")

    async def test_operational_disconnect(self) -> None:
        """The stream's operational-disconnect error drops the connection; a new one follows."""
        _, first = await self.streaming()
        reopened = self.fake.next_stream()
        first.send(OPERATIONAL_DISCONNECT)
        await first.lost
        self.clock.advance(0.25)
        await reopened

    async def test_rate_limited(self) -> None:
        """A 429 waits until x-rate-limit-reset, and says so in the status."""
        self.fake.answers.append((429, {"x-rate-limit-reset": str(int(START) + 120)}, {
            "title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank",
            "status": 429}))
        opened = self.fake.next_stream()
        self.source()
        await eventually(lambda: self.context.state == "backing off")
        self.assertEqual(self.context.detail, "429, retry in 120 s")
        self.clock.advance(119.9)
        self.assertFalse(opened.called)
        self.clock.advance(0.1)
        await opened

    async def test_unauthorized(self) -> None:
        """A refused token stops the source, saying so; the rest of tmd is untouched."""
        self.fake.token = "another-token"
        source = self.source()
        await eventually(lambda: self.context.state == "stopped")
        self.assertIn("401 Unauthorized", self.context.detail or "")
        calls = len(self.fake.calls)
        self.clock.advance(3600)
        self.assertEqual(self.fake.calls[calls:], [])  # neither the stream nor the rules
        room, _ = await self.create("lobby")
        _, token = await self.chat.join(room, {"nickname": "ada"})
        await self.chat.post("lobby", token, {"body": "still here"})
        self.assertEqual(source.ingested, 0)
        self.flushLoggedErrors()

    async def test_stop(self) -> None:
        """Stopping closes the stream and stops the rule syncs."""
        source, stream = await self.streaming()
        await source.stopService()
        await stream.lost
        calls = len(self.fake.calls)
        self.clock.advance(60)
        self.assertEqual(len(self.fake.calls), calls)


def authority_and_server() -> tuple[ssl.Certificate, ssl.PrivateCertificate]:
    """A test CA, and a server certificate it issued for C{localhost} (and no address)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tmd test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return (ssl.Certificate.loadPEM(ca.public_bytes(pem)),
            ssl.PrivateCertificate.loadPEM(cert.public_bytes(pem) + key_pem))


class TLSTests(TwitterTestCase):
    async def test_hostname_verified(self) -> None:
        """
        Over TLS, the server's certificate must name the host asked for: the same
        server is refused as 127.0.0.1 and accepted as localhost.
        """
        authority, server = authority_and_server()
        port = await listen(self, TrackedSite(self.fake.app.resource()), server.options())
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        http = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=authority),
                                pool=pool))
        number = port.getHost().port
        wrong = self.source(url=f"https://127.0.0.1:{number}", http=http)
        await eventually(lambda: self.context.state == "backing off")
        self.assertIn("cannot connect", self.context.detail or "")
        self.assertEqual(self.fake.calls, [])
        await wrong.stopService()

        opened = self.fake.next_stream()
        self.source(url=f"https://localhost:{number}", http=http)
        await opened
        self.assertEqual([method for method, _ in self.fake.calls], ["GET", "GET"])
