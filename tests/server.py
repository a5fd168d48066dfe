"""
tmd's web service in the test process, on a real loopback port.

The store is a real SQLite file run without threads (L{ImmediatePool}); the Hub's
presence timer and the event streams' keep-alives run on a L{Clock} the test
advances; sockets and Autobahn run on the real reactor, so clients are real HTTP
and websocket clients.
"""

from __future__ import annotations

from typing import Any

from attrs import define
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.clients import Http
from tests.helpers import in_thread_now, open_store
from tmd.bus import Bus, LocalBus, PostgresBus
from tmd.chat import Chat
from tmd.hub import Hub
from tmd.limits import ConnectionLimits, RateLimiter
from tmd.metrics import MeasuredStore, Metrics
from tmd.relay import Relay
from tmd.store import IStore
from tmd.store.postgres import PostgresStore
from tmd.web import DEFAULT_CONNECTIONS, WebService


@define
class Server:
    chat: Chat
    store: IStore
    hub: Hub
    hub_clock: Clock
    web: WebService
    port: int
    metrics: Metrics

    @property
    def http(self) -> Http:
        return Http(f"http://127.0.0.1:{self.port}")

    async def room_with(self, name: str, *nicknames: str, **settings: Any) -> dict[str, str]:
        """Create room C{name}, join C{nicknames}; returns their tokens (and the owner's)."""
        room, owner = await self.chat.create_room({"name": name, **settings})
        tokens = {"owner": owner}
        for nickname in nicknames:
            request: dict[str, Any] = {"nickname": nickname}
            if "password" in settings:
                request["password"] = settings["password"]
            _, tokens[nickname] = await self.chat.join(room, request)
        return tokens


async def start_server(test: TestCase, store: IStore | None = None,
                       clock: IReactorTime | None = None,
                       limiter: RateLimiter | None = None,
                       relay: Relay | None = None, serve_metrics: bool = True,
                       connections: ConnectionLimits = DEFAULT_CONNECTIONS,
                       public_url: str | None = None) -> Server:
    """
    Start the web service on a free port; it stops when the test ends. The store is
    a new SQLite file, or C{store} (open); on PostgreSQL, with the Bus. The chat core
    reads the time from C{clock} (default: the reactor). No rate limits, unless C{limiter};
    no webhooks or reflektor, unless C{relay}. Metrics are recorded (the store's calls
    through L{MeasuredStore}) and served at /metrics, unless not C{serve_metrics}. The
    port has the default C{connections} limits, and believes no proxy, unless told. Links
    are built from the request's host, unless C{public_url}.
    """
    if store is None:
        store = open_store(test)
    hub_clock = Clock()
    hub = Hub(hub_clock)
    bus: Bus = LocalBus(hub)
    if isinstance(store, PostgresStore):
        bus = PostgresBus(store, hub, hub_clock)
        await bus.start()
        test.addCleanup(bus.stop)
    metrics = Metrics()
    metrics.watch_hub(hub)
    measured = MeasuredStore(store, metrics)
    chat = Chat(measured, hub, clock if clock is not None else reactor, in_thread_now, bus,
                limiter, relay, metrics)
    web = WebService(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), chat, measured, hub,
                     reactor, relay=relay, keep_alive_clock=hub_clock, metrics=metrics,
                     serve_metrics=serve_metrics, connections=connections,
                     public_url=public_url)
    await web.startService()
    test.addCleanup(web.stopService)
    assert web.port is not None
    return Server(chat, store, hub, hub_clock, web, web.port, metrics)
