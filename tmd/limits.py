"""
Rate limits: token buckets per participant and per client address.

A rate such as C{10/15s} lets a key spend 10 at once, refilled evenly over 15
seconds. Buckets live in memory, per daemon; one untouched for a whole period is
full again and is forgotten, so memory follows the keys active in the last period
(and never exceeds L{MAX_KEYS} buckets per limit).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import OrderedDict

from attrs import field, frozen
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IReactorTime

from tmd.errors import RateLimited

MAX_KEYS = 100_000
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@frozen
class Rate:
    """C{count} actions at once, refilled evenly over C{period} seconds."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """C{"10/15s"}, C{"20/1h"}, ... or C{"off"} (None); ValueError otherwise."""
        if text.strip().lower() == "off":
            return None
        match = _RATE.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a rate: write COUNT/PERIOD, e.g. 10/15s, 20/1h,"
                             " or off")
        count, period = int(match[1]), float(match[2]) * _UNITS[match[3]]
        if count < 1 or period <= 0:
            raise ValueError(f"{text!r}: a rate needs a count and a period above zero")
        return cls(count, period)

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


@frozen
class Limits:
    """The rates tmd enforces; None turns one off."""

    participant_posts: Rate | None = field(default=Rate(10, 15))
    """A participant's posts: a burst of 10, then one every 1.5 s."""
    address_posts: Rate | None = field(default=Rate(60, 10))
    """Posts from one address, where a classroom may share one: 60, then 6 a second."""
    address_joins: Rate | None = field(default=Rate(60, 60))
    """Joins from one address: a class joining at once, not a nickname squatter."""
    address_rooms: Rate | None = field(default=Rate(20, 3600))
    """Rooms created from one address."""
    participant_votes: Rate | None = field(default=Rate(30, 10))
    """A participant's votes and unvotes: a quick pass over the questions, not a toggling loop."""


NO_LIMITS = Limits(None, None, None, None, None)


class Bucket:
    """Token buckets of one rate, by key."""

    def __init__(self, rate: Rate, clock: IReactorTime, what: str) -> None:
        self._rate = rate
        self._clock = clock
        self._what = what
        self._refill = rate.count / rate.period  # tokens a second
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # oldest first

    def take(self, key: str) -> None:
        """Spend one token of C{key}'s bucket, or raise L{RateLimited} saying when to retry."""
        now = self._clock.seconds()
        tokens, then = self._buckets.pop(key, (self._rate.count, now))
        # A wall clock stepped back must not drain the bucket: count no time as having passed.
        tokens = min(self._rate.count, tokens + max(0.0, now - then) * self._refill)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            self._forget_full(now)
            return
        self._buckets[key] = (tokens, now)
        wait = math.ceil((1 - tokens) / self._refill)
        raise RateLimited(f"Too many {self._what}: try again in {wait} s.", retry_after=wait)

    def _forget_full(self, now: float) -> None:
        while self._buckets:
            key, (_, then) = next(iter(self._buckets.items()))
            if now - then < self._rate.period and len(self._buckets) <= MAX_KEYS:
                return
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def address_key(address: IAddress | None) -> str | None:
    """Whom a client address stands for: an IPv4 host, or an IPv6 /64 (one site's hosts)."""
    if isinstance(address, IPv4Address):
        return address.host
    if isinstance(address, IPv6Address):
        host = ipaddress.IPv6Address(address.host.split("%")[0])
        if host.ipv4_mapped is not None:
            return str(host.ipv4_mapped)
        return str(ipaddress.IPv6Network((host, 64), strict=False))
    return None  # a UNIX socket: no address to limit by


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@frozen
class TrustedProxies:
    """
    The proxies (addresses or networks) whose C{X-Forwarded-For} is believed: behind
    one, the client is the last address in that header that is not a trusted proxy.
    """

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, listed: list[str] | tuple[str, ...]) -> TrustedProxies:
        """From addresses or networks such as C{127.0.0.1} or C{10.0.0.0/8}; else ValueError."""
        networks = []
        for entry in listed:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(f"trusted proxy {entry!r} is not an IP address or network,"
                                 " such as 127.0.0.1 or 10.0.0.0/8.") from None
        return cls(tuple(networks))

    def trusts(self, address: IAddress | None) -> bool:
        return isinstance(address, IPv4Address | IPv6Address) and self._trusts(address.host)

    def _trusts(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def key(self, peer: IAddress | None, forwarded_for: str | None) -> str | None:
        """The L{address_key} of the client, seen through the trusted proxies."""
        return address_key(self.client(peer, forwarded_for))

    def client(self, peer: IAddress | None, forwarded_for: str | None) -> IAddress | None:
        """Who the client is: C{peer}, or if it is a trusted proxy, whom it forwards for."""
        if forwarded_for is None or not self.trusts(peer):
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            try:
                ip = ipaddress.ip_address(hop.strip())
            except ValueError:
                break  # not an address: believe nothing further to the left
            client = (IPv4Address if ip.version == 4 else IPv6Address)("TCP", str(ip), 0)
            if not self._trusts(str(ip)):
                break
        return client


NO_PROXIES = TrustedProxies()
DEFAULT_MAX_SEND_BUFFER = 1024 * 1024


@frozen
class ConnectionLimits:
    """How many connections the web port holds, how long they may be silent, how much waits."""

    total: int = 20_000
    per_address: int = 1_000
    """From one client address (IPv6: one /64); trusted proxies count in the total only."""
    header_timeout: int = 10
    """Seconds a new connection has to send its first request's headers (slowloris)."""
    idle_timeout: int = 60
    """Seconds an HTTP connection may stay open without a request (keep-alive)."""
    max_send_buffer: int = DEFAULT_MAX_SEND_BUFFER
    """Bytes that may wait for a live client that does not read (websocket, event stream)."""
    trusted: TrustedProxies = NO_PROXIES


class RateLimiter:
    """The checks the chat core makes before it does work for a client."""

    def __init__(self, limits: Limits, clock: IReactorTime) -> None:
        def bucket(rate: Rate | None, what: str) -> Bucket | None:
            return Bucket(rate, clock, what) if rate is not None else None

        self._participant_posts = bucket(limits.participant_posts, "posts")
        self._address_posts = bucket(limits.address_posts, "posts from your network")
        self._address_joins = bucket(limits.address_joins, "joins from your network")
        self._address_rooms = bucket(limits.address_rooms, "new rooms from your network")
        self._participant_votes = bucket(limits.participant_votes, "votes")

    def post_from(self, address: str | None) -> None:
        _take(self._address_posts, address)

    def post_by(self, participant_id: str) -> None:
        _take(self._participant_posts, participant_id)

    def join(self, address: str | None) -> None:
        _take(self._address_joins, address)

    def create_room(self, address: str | None) -> None:
        _take(self._address_rooms, address)

    def vote_by(self, participant_id: str) -> None:
        _take(self._participant_votes, participant_id)


def _take(bucket: Bucket | None, key: str | None) -> None:
    if bucket is not None and key is not None:
        bucket.take(key)
