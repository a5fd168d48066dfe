"""
The metrics as a Prometheus server reads them: C{GET /metrics} parsed with
prometheus_client's own parser, after real HTTP and websocket traffic.
"""

from __future__ import annotations

from typing import Any

import attrs
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests import test_tap
from tests.clients import Http, connect, count
from tests.downstream import start_downstream
from tests.helpers import database_path, eventually, open_store
from tests.server import Server, start_server
from tmd.config import Config, Webhook
from tmd.metrics import MeasuredStore, Metrics
from tmd.model import Message, NewMessage
from tmd.relay import Relay
from tmd.tap import Options, build
from tmd.web.metrics import MetricsService

ROOM = "/api/v1/rooms/physics-101"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(exposition: bytes) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition.decode("utf-8"))
            for sample in family.samples}


async def scrape(http: Http) -> Samples:
    code, body = await http.call("GET", "/metrics")
    assert code == 200, (code, body)
    assert http.last_headers.getRawHeaders("content-type") == [
        "text/plain; version=0.0.4; charset=utf-8"]
    return parse(body)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class TrafficTests(TestCase):
    async def setUp(self) -> None:
        self.server: Server = await start_server(self)
        self.http = self.server.http

    async def joined(self) -> str:
        """Create the room and join it; the participant's token."""
        await self.http.call("POST", "/api/v1/rooms", {"name": "physics-101"})
        _, joined = await self.http.call("POST", f"{ROOM}/join", {"nickname": "ada"})
        return str(joined["token"])

    async def test_http_posts(self) -> None:
        """Posts over HTTP count, by kind, by route template and status, and are timed."""
        token = await self.joined()
        for n in range(3):
            code, _ = await self.http.call("POST", f"{ROOM}/messages", {"body": f"hi {n}"}, token)
            self.assertEqual(code, 201)
        await self.http.call("POST", f"{ROOM}/messages", {"body": " "}, token)  # 400, not posted
        samples = await scrape(self.http)
        self.assertEqual(value(samples, "tmd_messages_posted_total", kind="chat"), 3)
        self.assertEqual(value(samples, "tmd_messages_posted_total", kind="social"), 0)
        route = "/api/v1/rooms/<name>/messages"
        self.assertEqual(value(samples, "tmd_http_requests_total", route=route, method="POST",
                               status="201"), 3)
        self.assertEqual(value(samples, "tmd_http_requests_total", route=route, method="POST",
                               status="400"), 1)
        self.assertEqual(value(samples, "tmd_post_latency_seconds_count"), 3)
        self.assertGreater(value(samples, "tmd_post_latency_seconds_sum"), 0)
        self.assertEqual(value(samples, "tmd_store_latency_seconds_count", operation="post"), 3)
        self.assertEqual(value(samples, "tmd_store_latency_seconds_count",
                               operation="create_room"), 1)

    async def test_route_templates(self) -> None:
        """Requests are labelled by the route they took, never by their path."""
        for path in (f"{ROOM}-not-there", "/physics-101", "/static/js/room.js",
                     "/no/such/place?token=s3cret", ROOM + "/live", "/healthz"):
            await self.http.call("GET", path)
        await self.http.call("BREW", "/")
        samples = await scrape(self.http)
        requests = {(labels["route"], labels["method"], labels["status"])
                    for (name, labels) in map(lambda key: (key[0], dict(key[1])), samples)
                    if name == "tmd_http_requests_total"}
        self.assertEqual(requests, {
            ("/api/v1/rooms/<name>", "GET", "404"), ("/<name>", "GET", "200"),
            ("/static/<path>", "GET", "200"), ("unmatched", "GET", "404"),
            ("/api/v1/rooms/<name>/live", "GET", "400"), ("/healthz", "GET", "200"),
            ("unmatched", "other", "405")})
        exposition = (await self.http.call("GET", "/metrics"))[1]
        self.assertNotIn(b"physics", exposition)
        self.assertNotIn(b"s3cret", exposition)

    async def test_websocket(self) -> None:
        """
        The connections and live rooms gauges follow sockets opening and closing; posts
        over a socket count as posts, and every frame sent counts.
        """
        token = await self.joined()
        client = await connect(self.server.port, f"{ROOM}/live?token={token}")
        await client.wait_for(count("welcome", 1))
        samples = await scrape(self.http)
        self.assertEqual((value(samples, "tmd_websocket_connections"),
                          value(samples, "tmd_live_rooms")), (1, 1))
        client.post("over the socket", ref="r1")
        await client.wait_for(count("ack", 1))
        await client.wait_for(count("message", 1))
        samples = await scrape(self.http)
        self.assertEqual(value(samples, "tmd_messages_posted_total", kind="chat"), 1)
        self.assertEqual(value(samples, "tmd_websocket_frames_sent_total"), len(client.frames))
        client.sendClose()
        await client.closed
        await eventually(lambda: not self.server.web.live.connections)
        samples = await scrape(self.http)
        self.assertEqual((value(samples, "tmd_websocket_connections"),
                          value(samples, "tmd_live_rooms")), (0, 0))

    async def test_slow_consumers(self) -> None:
        """The slow-consumer counter is there from the start and moves when told."""
        self.assertEqual(value(await scrape(self.http), "tmd_slow_consumers_dropped_total"), 0)
        self.server.metrics.slow_consumer_dropped()
        self.assertEqual(value(await scrape(self.http), "tmd_slow_consumers_dropped_total"), 1)


class ReplayGaugeTests(TestCase):
    async def test_queues(self) -> None:
        """
        Each replay queue's length, attempt in flight, deliveries, dead letters and
        retries are read at scrape time, labelled by the queue without its URL's secrets.
        """
        good, good_url = await start_downstream(self)
        bad, bad_url = await start_downstream(self, [503, 404])
        clock = Clock()
        store = open_store(self)
        http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        relay = Relay(store, clock, [Webhook(f"{good_url}/hook?key=s3cret", "a"),
                                     Webhook(f"{bad_url}/hook", "b")], http=http)
        metrics = Metrics()
        metrics.watch_relay(relay)
        good_queue, bad_queue = relay.queues.values()
        for _ in range(2):
            relay.event("room.created", "physics-101", {"name": "physics-101"}).committed()
        samples = parse(metrics.exposition())
        good_label = f"webhook 1 {good_url}"
        self.assertEqual(good_queue.name, good_label)
        self.assertEqual((value(samples, "tmd_replay_queued", queue=good_label),
                          value(samples, "tmd_replay_in_flight", queue=good_label)), (2, 0))

        def advanced(done: bool) -> bool:
            clock.advance(2)  # past the first back-off
            return done

        await eventually(lambda: advanced(good_queue.delivered == 2 and not len(bad_queue)))
        samples = parse(metrics.exposition())
        bad_label = f"webhook 2 {bad_url}"
        self.assertEqual({(name, dict(labels).get("queue")): sample
                          for (name, labels), sample in samples.items()
                          if name.startswith("tmd_replay")}, {
            ("tmd_replay_queued", good_label): 0, ("tmd_replay_queued", bad_label): 0,
            ("tmd_replay_in_flight", good_label): 0, ("tmd_replay_in_flight", bad_label): 0,
            ("tmd_replay_delivered_total", good_label): 2,
            ("tmd_replay_delivered_total", bad_label): 1,
            ("tmd_replay_dead_letters_total", good_label): 0,
            ("tmd_replay_dead_letters_total", bad_label): 1,
            ("tmd_replay_retries_total", good_label): 0,
            ("tmd_replay_retries_total", bad_label): 1,
            ("tmd_replay_dropped_total", None): 0})
        self.assertEqual((len(good.received), len(bad.received)), (2, 3))
        await relay.stop(0)


class SeparateEndpointTests(TestCase):
    async def test_metrics_listen(self) -> None:
        """
        With the metrics on an endpoint of their own, the main port answers /metrics
        with the API's JSON 404, and the metrics endpoint serves nothing else.
        """
        server = await start_server(self, serve_metrics=False)
        scrapes = MetricsService(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                 server.metrics)
        await scrapes.startService()
        self.addCleanup(scrapes.stopService)
        code, body = await server.http.call("GET", "/metrics")
        self.assertEqual((code, body["error"]["code"]), (404, "not_found"))
        metrics_http = Http(f"http://127.0.0.1:{scrapes.port}")
        samples = await scrape(metrics_http)
        self.assertEqual(value(samples, "tmd_http_requests_total", route="/metrics",
                               method="GET", status="404"), 1)
        code, body = await metrics_http.call("GET", "/api/v1/rooms/physics-101")
        self.assertEqual((code, body["error"]["code"]), (404, "not_found"))


class FakeStore:
    """Answers C{room} with a failure and C{post} with the message, at once."""

    where = "nowhere"

    def room(self, name: str) -> Deferred[None]:
        return fail(ValueError("no database"))

    def post(self, room: object, new: NewMessage, outbox: object = ()) -> Deferred[Message]:
        return succeed(Message(seq=1, room="physics-101", **attrs.asdict(new, recurse=False)))


class MeasuredStoreTests(SynchronousTestCase):
    def test_measured(self) -> None:
        """
        Every call of the store's interface is timed, failed ones too; committed
        messages count by kind; anything else passes through untouched.
        """
        metrics = Metrics(timer=iter(range(100)).__next__)
        measured: Any = MeasuredStore(FakeStore(), metrics)  # type: ignore[arg-type]
        self.failureResultOf(measured.room("physics-101"), ValueError)
        new = NewMessage(kind="social", author="@ada", participant_id=None, body="hi",
                         created_at=0)
        self.assertEqual(self.successResultOf(measured.post(None, new)).kind, "social")
        self.assertIs(measured.post, measured.post)  # wrapped once
        self.assertEqual(measured.where, "nowhere")
        samples = parse(metrics.exposition())
        self.assertEqual({operation: (value(samples, "tmd_store_latency_seconds_count",
                                            operation=operation),
                                      value(samples, "tmd_store_latency_seconds_sum",
                                            operation=operation))
                          for operation in ("room", "post")}, {"room": (1, 1), "post": (1, 1)})
        self.assertEqual((value(samples, "tmd_messages_posted_total", kind="social"),
                          value(samples, "tmd_messages_posted_total", kind="chat")), (1, 0))


class OptionTests(SynchronousTestCase):
    def test_metrics_listen(self) -> None:
        """--metrics-listen takes an endpoint, checked as --listen's is."""
        options = Options()
        options.parseOptions(["--metrics-listen", "tcp:9100:interface=127.0.0.1"])
        assert options.config is not None
        self.assertEqual(options.config.metrics_listen, "tcp:9100:interface=127.0.0.1")
        error = self.assertRaises(UsageError, Options().parseOptions,
                                  ["--metrics-listen", "nonsense:1"])
        self.assertIn("--metrics-listen 'nonsense:1'", str(error))

    def test_built(self) -> None:
        """With --metrics-listen, a service of its own serves the metrics, after the web's."""
        config = Config(database="sqlite:" + database_path(self), metrics_listen="tcp:9100")
        root = build(config, test_tap.ThreadPoolMemoryReactor())
        names = [service.name for service in root]
        self.assertEqual(names[names.index("web") + 1], "metrics")
        self.assertIsInstance(root.getServiceNamed("metrics"), MetricsService)
        self.assertNotIn("metrics", [service.name for service in build(
            Config(database="sqlite:" + database_path(self)), test_tap.ThreadPoolMemoryReactor())])


class PluginGaugeTests(SynchronousTestCase):
    def test_plugin_up(self) -> None:
        """Each enabled plugin: 1 while it runs or its source is connected, else 0."""
        metrics = Metrics()
        statuses = {"irc": {"state": "running", "detail": None},
                    "twitter": {"state": "backing off", "detail": "429, retry in 60 s"}}
        metrics.watch_plugins(lambda: statuses, dict)
        samples = parse(metrics.exposition())
        self.assertEqual(value(samples, "tmd_plugin_up", plugin="irc", state="running"), 1)
        self.assertEqual(value(samples, "tmd_plugin_up", plugin="twitter", state="backing off"),
                         0)

    def test_plugin_events(self) -> None:
        """What each plugin counts, read at each scrape: a source's ingested posts, say."""
        metrics = Metrics()
        counts = {"twitter": {"ingested": 5, "capped": 2}, "irc": {}}
        metrics.watch_plugins(dict, lambda: counts)
        samples = parse(metrics.exposition())
        self.assertEqual(value(samples, "tmd_plugin_events_total", plugin="twitter",
                               event="ingested"), 5)
        self.assertEqual(value(samples, "tmd_plugin_events_total", plugin="twitter",
                               event="capped"), 2)
        counts["twitter"]["ingested"] = 7
        self.assertEqual(value(parse(metrics.exposition()), "tmd_plugin_events_total",
                               plugin="twitter", event="ingested"), 7)
