"""
The daemon's metrics, served in the Prometheus text format at C{GET /metrics}.

One L{Metrics}, made in C{tap.build}, holds every metric in a registry of its own
(so tests make fresh ones) and is handed to what records: the chat core (post
latency), the store (L{MeasuredStore}: query latency, messages committed) and the
web site (requests). What other objects already count (open connections, frames
sent, live rooms, the replay queues) is read from them at each scrape, never
pushed: L{Metrics.read_at_scrape} takes more such readers (plugins, say).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sized
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from tmd.hub import Hub
from tmd.relay import Relay
from tmd.store import IStore

Reader = Callable[[], Iterable[Metric]]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What C{generate_latest} writes: the Prometheus text format, version 0.0.4."""
MESSAGE_KINDS = ("chat", "social", "system")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The route of a request that matched no route (a 404 or 405 from routing)."""

# Posts take about a millisecond on loopback; store calls a fraction of one.
POST_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5)
STORE_BUCKETS = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5)


class LiveSockets(Protocol):
    """What the metrics read of the websockets (L{tmd.web.live.LiveFactory})."""

    @property
    def connections(self) -> Sized: ...

    @property
    def frames_sent(self) -> int: ...


class _ReadAtScrape:
    """A collector of the metric families its readers make at each scrape."""

    def __init__(self, readers: list[Reader]) -> None:
        self._readers = readers

    def describe(self) -> list[Metric]:
        return []  # registering must not read: the readers' objects may not exist yet

    def collect(self) -> Iterable[Metric]:
        for read in self._readers:
            yield from read()


class Metrics:
    """Every metric of the daemon, in C{registry}; C{timer} measures durations (seconds)."""

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        self.timer = timer
        self.registry = registry = CollectorRegistry()
        self._readers: list[Reader] = []
        registry.register(_ReadAtScrape(self._readers))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.messages_posted = Counter(
            "tmd_messages_posted", "Messages committed by this daemon, by kind.", ["kind"],
            registry=registry)
        for kind in MESSAGE_KINDS:
            self.messages_posted.labels(kind)
        self.slow_consumers = Counter(
            "tmd_slow_consumers_dropped",
            "Live clients disconnected for falling too far behind (websocket close 1013, event"
            " stream cut off).",
            registry=registry)
        self.http_requests = Counter(
            "tmd_http_requests", "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"], registry=registry)
        self._http_children: dict[tuple[str, str, int], Any] = {}
        self.post_latency = Histogram(
            "tmd_post_latency_seconds",
            "From the chat core taking a post to its commit and publication.",
            buckets=POST_BUCKETS, registry=registry)
        self.store_latency = Histogram(
            "tmd_store_latency_seconds", "Store calls, by operation, until they answer.",
            ["operation"], buckets=STORE_BUCKETS, registry=registry)
        self.websocket_connections = Gauge(
            "tmd_websocket_connections", "Open websocket connections.", registry=registry)
        self.live_rooms = Gauge(
            "tmd_live_rooms", "Rooms with live clients on this daemon.", registry=registry)

    def exposition(self) -> bytes:
        """Every metric, in the Prometheus text format (L{CONTENT_TYPE})."""
        return generate_latest(self.registry)

    def read_at_scrape(self, reader: Reader) -> None:
        """Add C{reader}: at each scrape, it makes metric families from state kept elsewhere."""
        self._readers.append(reader)

    def http_request(self, route: str, method: bytes, status: int) -> None:
        """Count an answered request; C{route} is its template (bounded), never its path."""
        name = method.decode("latin-1")
        key = (route, name if name in HTTP_METHODS else "other", status)  # clients pick methods
        child = self._http_children.get(key)
        if child is None:
            child = self._http_children[key] = self.http_requests.labels(*key[:2], str(status))
        child.inc()

    def slow_consumer_dropped(self) -> None:
        """
        Count a live client dropped for being too slow to keep up: call it where such a
        client is closed with 1013 (its buffer limit reached).
        """
        self.slow_consumers.inc()

    def watch_websockets(self, live: LiveSockets) -> None:
        """Read the open websocket connections and the frames sent to them from C{live}."""
        self.websocket_connections.set_function(lambda: len(live.connections))
        self.read_at_scrape(lambda: [CounterMetricFamily(
            "tmd_websocket_frames_sent", "Frames sent to websocket clients.",
            value=live.frames_sent)])

    def watch_hub(self, hub: Hub) -> None:
        """Read the number of rooms with live clients here from C{hub}."""
        self.live_rooms.set_function(lambda: len(hub.rooms()))

    def watch_relay(self, relay: Relay) -> None:
        """Read each replay queue's length and counters, labelled by queue, from C{relay}."""
        def read() -> Iterable[Metric]:
            queued = GaugeMetricFamily(
                "tmd_replay_queued", "Deliveries waiting, the one in flight included.",
                labels=["queue"])
            in_flight = GaugeMetricFamily(
                "tmd_replay_in_flight", "Deliveries being attempted (0 or 1).", labels=["queue"])
            delivered = CounterMetricFamily(
                "tmd_replay_delivered", "Deliveries delivered.", labels=["queue"])
            dead = CounterMetricFamily(
                "tmd_replay_dead_letters", "Deliveries given up on.", labels=["queue"])
            retries = CounterMetricFamily(
                "tmd_replay_retries", "Failed attempts followed by another.", labels=["queue"])
            for queue in relay.queues.values():
                label = [queue.name]
                queued.add_metric(label, len(queue))
                in_flight.add_metric(label, queue.in_flight)
                delivered.add_metric(label, queue.delivered)
                dead.add_metric(label, queue.dead_letters)
                retries.add_metric(label, queue.retries)
            dropped = CounterMetricFamily(
                "tmd_replay_dropped", "Deliveries refused by a full or closed queue.",
                value=relay.dropped)
            return [queued, in_flight, delivered, dead, retries, dropped]

        self.read_at_scrape(read)

    def watch_plugins(self, statuses: Callable[[], Mapping[str, Mapping[str, str | None]]],
                      counts: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        """
        Read whether each enabled plugin is up (running or connected) from C{statuses},
        and the totals each reports (a source's posts ingested, say) from C{counts}.
        """
        def read() -> Iterable[Metric]:
            up = GaugeMetricFamily(
                "tmd_plugin_up", "1 if the plugin runs (and its source is connected), else 0;"
                " the state is a label.", labels=["plugin", "state"])
            for name, status in statuses().items():
                state = status["state"] or ""
                up.add_metric([name, state], 1 if state in PLUGIN_UP_STATES else 0)
            events = CounterMetricFamily(
                "tmd_plugin_events", "What each plugin counts, by name: a social source's"
                " posts ingested, capped (its room at the hourly cap), refused by the chat,"
                " and its reconnects.", labels=["plugin", "event"])
            for name, totals in counts().items():
                for event, total in totals.items():
                    events.add_metric([name, event], total)
            return [up, events]

        self.read_at_scrape(read)


PLUGIN_UP_STATES = frozenset({"running", "connected", "polling"})


@implementer(IStore)
class MeasuredStore:
    """
    A store that times every call of C{store} by operation, and counts the messages
    it commits by kind; anything else passes through untouched.
    """

    def __init__(self, store: IStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._store, name)
        if name not in IStore:
            return call
        measured = self._measured(name, call)
        setattr(self, name, measured)  # found directly from now on
        return measured

    def _measured(self, name: str, call: Callable[..., Deferred[Any]],
                  ) -> Callable[..., Deferred[Any]]:
        observe = self._metrics.store_latency.labels(name).observe
        timer = self._metrics.timer
        counted = self._metrics.messages_posted.labels if name == "post" else None

        def measured(*args: Any, **kwargs: Any) -> Deferred[Any]:
            started = timer()

            def answered(result: Any) -> Any:
                observe(timer() - started)
                if counted is not None and not isinstance(result, Failure):
                    counted(result.kind).inc()
                return result

            return call(*args, **kwargs).addBoth(answered)

        return measured
