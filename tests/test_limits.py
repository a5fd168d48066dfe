"""Rate limits: token buckets on a driven clock, and 429s over real HTTP and websockets."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.clients import connect, count
from tests.server import Server, start_server
from tmd import limits
from tmd.errors import RateLimited
from tmd.limits import (
    NO_LIMITS,
    Bucket,
    ConnectionLimits,
    Limits,
    Rate,
    RateLimiter,
    TrustedProxies,
    address_key,
)

ROOM = "/api/v1/rooms/physics-101"


class RateTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """COUNT/PERIOD with an optional unit; C{off} is no limit."""
        self.assertEqual(Rate.parse("10/15s"), Rate(10, 15))
        self.assertEqual(Rate.parse(" 20 / 1h "), Rate(20, 3600))
        self.assertEqual(Rate.parse("5/0.5"), Rate(5, 0.5))
        self.assertEqual(Rate.parse("1/2d"), Rate(1, 172_800))
        self.assertIsNone(Rate.parse("OFF"))
        self.assertEqual(str(Rate(20, 3600)), "20/3600s")

    def test_parse_errors(self) -> None:
        """Anything else is a ValueError that shows how to write a rate."""
        for text in ("", "10", "ten/1s", "10/1w", "0/1s", "10/0s", "-1/1s"):
            with self.assertRaises(ValueError, msg=text) as caught:
                Rate.parse(text)
            self.assertIn(repr(text), str(caught.exception))


class BucketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.bucket = Bucket(Rate(3, 6), self.clock, "posts")  # 3 at once, one back every 2 s

    def refused(self, key: str = "k") -> int:
        with self.assertRaises(RateLimited) as caught:
            self.bucket.take(key)
        error = caught.exception
        self.assertEqual((error.status, error.code), (429, "rate_limited"))
        self.assertIn(f"try again in {error.retry_after} s", error.message)
        assert error.retry_after is not None
        return error.retry_after

    def test_burst_then_refused(self) -> None:
        """A key spends its burst at once; the next is refused with when to retry."""
        for _ in range(3):
            self.bucket.take("k")
        self.assertEqual(self.refused(), 2)
        self.bucket.take("other")  # keys are independent

    def test_refills_evenly(self) -> None:
        """Tokens come back one per period/count; a refusal costs nothing."""
        for _ in range(3):
            self.bucket.take("k")
        self.clock.advance(1.5)
        self.assertEqual(self.refused(), 1)  # 0.75 of a token: a quarter still to wait
        self.clock.advance(0.5)
        self.bucket.take("k")
        self.assertEqual(self.refused(), 2)
        self.clock.advance(60)  # never more than the burst
        for _ in range(3):
            self.bucket.take("k")
        self.refused()

    def test_forgets_full_buckets(self) -> None:
        """A bucket untouched for a whole period is full again and is dropped."""
        for key in ("a", "b", "c"):
            self.bucket.take(key)
        self.clock.advance(4)
        self.bucket.take("b")
        self.assertEqual(len(self.bucket), 3)
        self.clock.advance(2)  # a and c were last used 6 s ago; b 2 s ago
        self.bucket.take("d")
        self.assertEqual(len(self.bucket), 2)

    def test_bounded(self) -> None:
        """Past L{limits.MAX_KEYS}, the least recently used buckets go, full or not."""
        self.patch(limits, "MAX_KEYS", 100)
        for i in range(1000):
            self.bucket.take(f"10.0.{i // 256}.{i % 256}")
        self.assertEqual(len(self.bucket), 100)


class AddressKeyTests(SynchronousTestCase):
    def test_addresses(self) -> None:
        """IPv4 hosts are themselves; IPv6 hosts count by /64; UNIX sockets are not limited."""
        self.assertEqual(address_key(IPv4Address("TCP", "192.0.2.7", 5000)), "192.0.2.7")
        for host in ("2001:db8:1:2::7", "2001:db8:1:2:aaaa::1%eth0"):
            self.assertEqual(address_key(IPv6Address("TCP", host, 5000)), "2001:db8:1:2::/64")
        self.assertEqual(address_key(IPv6Address("TCP", "::ffff:192.0.2.7", 5000)), "192.0.2.7")
        self.assertIsNone(address_key(UNIXAddress(b"/run/tmd.sock")))
        self.assertIsNone(address_key(None))


class RateLimiterTests(SynchronousTestCase):
    def test_no_limits(self) -> None:
        """With every limit off, nothing is ever refused."""
        limiter = RateLimiter(NO_LIMITS, Clock())
        for _ in range(1000):
            limiter.post_from("a")
            limiter.post_by("p")
            limiter.join("a")
            limiter.create_room("a")

    def test_defaults_spare_a_fast_typist(self) -> None:
        """The default post limit lets a message every 2 s through for ever, stops a flood."""
        clock = Clock()
        limiter = RateLimiter(Limits(), clock)
        for _ in range(300):
            limiter.post_by("p")
            clock.advance(2)
        for _ in range(10):
            limiter.post_by("p")
        self.assertRaises(RateLimited, limiter.post_by, "p")

    def test_no_address(self) -> None:
        """A client without an address (a UNIX socket) is limited per participant only."""
        limiter = RateLimiter(Limits(address_posts=Rate(1, 60)), Clock())
        for _ in range(5):
            limiter.post_from(None)
        limiter.post_from("a")
        self.assertRaises(RateLimited, limiter.post_from, "a")


class LimitsOverHttpTests(TestCase):
    async def setUp(self) -> None:
        self.clock = Clock()
        self.limits = Limits(participant_posts=Rate(2, 10), address_posts=Rate(4, 40),
                             address_joins=Rate(2, 60), address_rooms=Rate(2, 3600))
        self.server: Server = await start_server(self, limiter=RateLimiter(self.limits, self.clock))
        self.http = self.server.http

    async def assert_limited(self, method: str, path: str, body: object, token: str | None = None,
                             ) -> int:
        code, error = await self.http.call(method, path, body, token=token)
        self.assertEqual((code, error["error"]["code"]), (429, "rate_limited"), error)
        [retry_after] = self.http.last_headers.getRawHeaders("retry-after")
        return int(retry_after)

    async def test_posts(self) -> None:
        """Per participant, then per address: 429 with Retry-After, then posts again."""
        tokens = await self.server.room_with("physics-101", "ada", "bob")
        for body in ("1", "2"):
            code, _ = await self.http.call("POST", f"{ROOM}/messages", {"body": body},
                                           token=tokens["ada"])
            self.assertEqual(code, 201)
        self.assertEqual(await self.assert_limited(
            "POST", f"{ROOM}/messages", {"body": "3"}, tokens["ada"]), 5)
        code, _ = await self.http.call("POST", f"{ROOM}/messages", {"body": "b"},
                                       token=tokens["bob"])
        self.assertEqual(code, 201)  # his own bucket; every try from the address counted
        self.assertEqual(await self.assert_limited(
            "POST", f"{ROOM}/messages", {"body": "b2"}, tokens["bob"]), 10)
        self.clock.advance(10)
        code, message = await self.http.call("POST", f"{ROOM}/messages", {"body": "again"},
                                             token=tokens["ada"])
        self.assertEqual((code, message["seq"]), (201, 4))  # refused posts used no seq
        _, page = await self.http.call("GET", f"{ROOM}/messages")
        self.assertEqual([m["body"] for m in page["messages"]], ["1", "2", "b", "again"])

    async def test_rooms_and_joins(self) -> None:
        """Creating rooms and joining are limited per address."""
        for name in ("one", "two"):
            code, _ = await self.http.call("POST", "/api/v1/rooms", {"name": name})
            self.assertEqual(code, 201)
        self.assertEqual(await self.assert_limited("POST", "/api/v1/rooms", {"name": "three"}),
                         1800)
        self.assertEqual((await self.http.call("GET", "/api/v1/rooms/three"))[0], 404)
        for nickname in ("ada", "bob"):
            code, _ = await self.http.call("POST", "/api/v1/rooms/one/join",
                                           {"nickname": nickname})
            self.assertEqual(code, 201)
        await self.assert_limited("POST", "/api/v1/rooms/one/join", {"nickname": "eve"})
        self.clock.advance(30)
        code, _ = await self.http.call("POST", "/api/v1/rooms/one/join", {"nickname": "eve"})
        self.assertEqual(code, 201)

    async def test_websocket(self) -> None:
        """A limited post on the socket is an error frame with its ref and retry_after."""
        tokens = await self.server.room_with("physics-101", "ada")
        client = await connect(self.server.port, f"{ROOM}/live?token={tokens['ada']}")
        await client.wait_for(count("welcome", 1))
        for ref in ("r1", "r2", "r3"):
            client.post(ref, ref)
        frames = await client.wait_for(lambda fs: count("ack", 2)(fs) and count("error", 1)(fs))
        [error] = [f for f in frames if f["type"] == "error"]
        self.assertEqual((error["ref"], error["code"], error["retry_after"]),
                         ("r3", "rate_limited", 5))
        self.clock.advance(5)
        client.post("r4", "r4")
        frames = await client.wait_for(count("ack", 3))
        self.assertEqual([f["ref"] for f in frames if f["type"] == "ack"], ["r1", "r2", "r4"])


class BehindProxyTests(TestCase):
    async def setUp(self) -> None:
        self.clock = Clock()
        limits = Limits(address_rooms=Rate(1, 3600), address_posts=Rate(1, 3600))
        self.server = await start_server(
            self, limiter=RateLimiter(limits, self.clock),
            connections=ConnectionLimits(trusted=TrustedProxies.parse(["127.0.0.1"])))

    async def call(self, path: str, body: object, forwarded_for: str,
                   token: str | None = None) -> int:
        code, _ = await self.server.http.call("POST", path, body, token, headers={
            "X-Forwarded-For": [forwarded_for]})
        return code

    async def test_forwarded_for(self) -> None:
        """Behind a trusted proxy, each forwarded client has its own limits."""
        self.assertEqual(await self.call("/api/v1/rooms", {"name": "one"}, "203.0.113.1"), 201)
        self.assertEqual(await self.call("/api/v1/rooms", {"name": "two"}, "203.0.113.2"), 201)
        self.assertEqual(await self.call("/api/v1/rooms", {"name": "three"},
                                         "198.51.100.9, 203.0.113.1"), 429)

    async def test_websocket(self) -> None:
        """The websocket counts the forwarded client too, in the same bucket as its HTTP."""
        tokens = await self.server.room_with("physics-101", "ada")
        client = await connect(self.server.port, f"{ROOM}/live?token={tokens['ada']}",
                               headers={"X-Forwarded-For": "203.0.113.7"})
        await client.wait_for(count("welcome", 1))
        client.post("hi", "r1")
        await client.wait_for(count("ack", 1))
        post = (f"{ROOM}/messages", {"body": "again"})
        self.assertEqual(await self.call(*post, "203.0.113.7", tokens["ada"]), 429)
        self.assertEqual(await self.call(*post, "203.0.113.8", tokens["ada"]), 201)


class TrustedProxiesTests(SynchronousTestCase):
    proxies = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])

    def client(self, peer: str, forwarded_for: str | None) -> str | None:
        address = (IPv6Address if ":" in peer else IPv4Address)("TCP", peer, 1)
        found = self.proxies.client(address, forwarded_for)
        return getattr(found, "host", None)

    def test_untrusted_peer(self) -> None:
        """A peer that is no trusted proxy is the client, whatever it claims."""
        self.assertEqual(self.client("192.0.2.7", "203.0.113.9"), "192.0.2.7")

    def test_forwarded(self) -> None:
        """Behind trusted proxies, the client is the last address that is not one of them."""
        self.assertEqual(self.client("127.0.0.1", "203.0.113.9"), "203.0.113.9")
        self.assertEqual(self.client("127.0.0.1", "198.51.100.1, 203.0.113.9, 10.1.1.1"),
                         "203.0.113.9")
        self.assertEqual(self.client("fd00::1", "2001:db8::5"), "2001:db8::5")
        self.assertEqual(self.client("127.0.0.1", None), "127.0.0.1")

    def test_garbage(self) -> None:
        """A hop that is not an address stops the walk: nothing to its left is believed."""
        self.assertEqual(self.client("127.0.0.1", "203.0.113.9, junk"), "127.0.0.1")
        self.assertEqual(self.client("127.0.0.1", "10.0.0.1"), "10.0.0.1")

    def test_parse(self) -> None:
        """Entries are addresses or networks; anything else is refused, naming it."""
        self.assertIn("'nope'", str(self.assertRaises(ValueError, TrustedProxies.parse, ["nope"])))
        self.assertFalse(TrustedProxies().trusts(IPv4Address("TCP", "127.0.0.1", 1)))
