"""The Web service: the Klein site and the live websockets on one listening endpoint."""

from __future__ import annotations

import site
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IReactorTime, IReadDescriptor, IStreamServerEndpoint

from tmd.chat import Chat
from tmd.hub import Hub
from tmd.limits import ConnectionLimits
from tmd.metrics import Metrics
from tmd.relay import Relay
from tmd.service import Listener
from tmd.store import IStore
from tmd.web.app import WebApp
from tmd.web.events import EventStreams
from tmd.web.guard import Guard
from tmd.web.live import LiveFactory
from tmd.web.request import MeasuredSite

DEFAULT_CONNECTIONS = ConnectionLimits()
CLOSE_TIMEOUT = 5.0
"""Seconds to wait, at shutdown, for websocket clients to answer our close."""


def static_dir() -> Path:
    """The browser page: at the top of a checkout, or where C{pip install} put it."""
    candidates = [
        Path(__file__).resolve().parents[2] / "static",
        Path(sys.prefix) / "share" / "tmd" / "static",
        Path(site.getuserbase()) / "share" / "tmd" / "static",
    ]
    for candidate in candidates:
        if (candidate / "index.html").is_file():
            return candidate
    raise FileNotFoundError(f"The browser page is missing: looked in {candidates}.")


class WebService(Listener):
    """
    Listens on an endpoint; at stop, refuses new connections, ends event streams and
    closes websockets with 1001.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, chat: Chat, store: IStore, hub: Hub,
                 reactor: IReactorTime, origins: frozenset[str] = frozenset(),
                 relay: Relay | None = None,
                 plugins: Callable[[], Mapping[str, Any]] = dict,
                 keep_alive_clock: IReactorTime | None = None, metrics: Metrics | None = None,
                 serve_metrics: bool = True,
                 connections: ConnectionLimits = DEFAULT_CONNECTIONS,
                 public_url: str | None = None) -> None:
        self._reactor = reactor
        metrics = metrics if metrics is not None else Metrics()
        self.live = LiveFactory(chat, hub, reactor, origins, connections.trusted,
                                connections.max_send_buffer, metrics.slow_consumer_dropped)
        metrics.watch_websockets(self.live)
        self.events = EventStreams(chat, hub, keep_alive_clock or reactor,
                                   metrics.slow_consumer_dropped, connections.max_send_buffer)
        app = WebApp(chat, store, WebSocketResource(self.live), static_dir(),
                     relay if relay is not None else Relay(store, reactor), plugins,
                     events=self.events, metrics=metrics if serve_metrics else None,
                     trusted=connections.trusted, public_url=public_url)
        self.site = MeasuredSite(app.app.resource(), metrics)
        self.site.timeOut = connections.idle_timeout  # between requests (keep-alive)
        self.site.reactor = reactor  # times it
        self.guard = Guard(self.site, reactor, connections.total, connections.per_address,
                           connections.header_timeout, connections.trusted)
        super().__init__(endpoint, self.guard, "tmd listening")

    async def _stop(self) -> None:
        if IReadDescriptor.providedBy(self._port) and getattr(self._port, "connected", False):
            self._port.doRead()  # take the connections the kernel has accepted: they are served
        await super()._stop()
        self.events.close_all()
        await self.live.close_all(self._reactor, CLOSE_TIMEOUT)
        await self.guard.close_http(CLOSE_TIMEOUT)
