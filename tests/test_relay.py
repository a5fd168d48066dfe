"""
The relay over real HTTP: room events to webhooks (signed), the reflektor endpoint,
retries and dead letters, the outbox across a restart, and the drain at stop.

Queues run on a L{Clock} the test drives; requests travel over real loopback
sockets to a L{Downstream}, so the test waits for them with L{eventually}.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.clients import Http
from tests.downstream import Downstream, Received, start_downstream
from tests.helpers import eventually, open_store
from tests.server import Server, start_server
from tmd.config import Replay, Webhook
from tmd.model import Delivery
from tmd.relay import Relay, signature
from tmd.store import IStore

NOW = 1_764_000_000.0
ROOM = "/api/v1/rooms/physics-101"
SECRET = "s3cret"
TOKEN = "replay-token"
LONGER_THAN_ANY_BACKOFF = 400


def verified(received: Received, secret: str) -> dict[str, Any]:
    """The event, once its signature is checked the way a receiver checks it."""
    scheme, _, sent = received.headers["x-tmd-signature"].partition("=")
    expected = hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    assert scheme == "sha256" and hmac.compare_digest(sent, expected), received
    return dict(json.loads(received.body))


class RelayTestCase(TestCase):
    async def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store: IStore = open_store(self)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http_client = HTTPClient(Agent(reactor, pool=pool))

    def relay(self, webhooks: list[Webhook] = (), **replay: Any) -> Relay:  # type: ignore[assignment]
        relay = Relay(self.store, self.clock, webhooks, Replay(**replay), self.http_client)
        self.addCleanup(self.stop, relay, 0)
        return relay

    def stop(self, relay: Relay, timeout: float) -> Deferred[None]:
        """Start stopping C{relay}; the clock runs out its deadline when the test advances it."""
        stopping = Deferred.fromCoroutine(relay.stop(timeout))
        self.clock.advance(0)
        return stopping

    async def until(self, predicate: Callable[[], object]) -> None:
        """Drive the queues' clock (their next attempt is due now) until C{predicate()}."""
        def check() -> object:
            self.clock.advance(0)
            return predicate()

        await eventually(check)

    async def retry(self, downstream: Downstream, count: int) -> None:
        """Let the back-off pass; wait for request number C{count}."""
        self.clock.advance(LONGER_THAN_ANY_BACKOFF)
        await self.until(lambda: len(downstream.received) >= count)


class WebhookTests(RelayTestCase):
    async def test_room_events(self) -> None:
        """Every room event reaches each webhook, in order, signed with its own secret."""
        one, one_url = await start_downstream(self)
        two, two_url = await start_downstream(self)
        relay = self.relay([Webhook(one_url + "/hook", SECRET), Webhook(two_url, "other")])
        server: Server = await start_server(self, store=self.store, relay=relay)
        http: Http = server.http
        code, created = await http.call("POST", "/api/v1/rooms", {"name": "physics-101"})
        self.assertEqual(code, 201)
        owner = created["owner_token"]
        _, joined = await http.call("POST", f"{ROOM}/join", {"nickname": "ada"})
        _, message = await http.call("POST", f"{ROOM}/messages", {"body": "Is light a wave?"},
                                     token=joined["token"])
        await http.call("DELETE", f"{ROOM}/messages/1", token=owner)
        _, updated = await http.call("PATCH", ROOM, {"title": "Waves"}, token=owner)
        await http.call("DELETE", ROOM, token=owner)
        await self.until(lambda: len(one.received) == 5 and len(two.received) == 5)

        events = [verified(r, SECRET) for r in one.received]
        self.assertEqual([e["event"] for e in events], [
            "room.created", "message.created", "message.deleted", "room.updated",
            "room.deleted"])
        self.assertEqual([e["room"] for e in events], ["physics-101"] * 5)
        self.assertEqual(events[1]["data"], message)
        self.assertEqual(events[2]["data"], {"seq": 1})
        self.assertEqual((events[0]["data"]["name"], events[3]["data"]["title"]),
                         ("physics-101", updated["title"]))
        first = one.received[1]
        self.assertEqual((first.method, first.uri, first.headers["content-type"],
                          first.headers["x-tmd-event"], first.headers["x-tmd-delivery"]),
                         ("POST", "/hook", "application/json", "message.created",
                          events[1]["id"]))
        self.assertEqual(len({e["id"] for e in events}), 5)
        # The other webhook got the same events, under the same ids, signed with its secret.
        self.assertEqual([verified(r, "other") for r in two.received], events)

    async def test_retried_until_delivered(self) -> None:
        """A 5xx, 408 or 429 is retried after a back-off, with the same delivery id."""
        downstream, url = await start_downstream(self, [503, 408, 429])
        relay = self.relay([Webhook(url, SECRET)])
        relay.event("room.created", "physics-101", {"name": "physics-101"}).committed()
        await self.until(lambda: len(downstream.received) == 1)
        for attempt in (2, 3, 4):
            await self.retry(downstream, attempt)
        await self.until(lambda: relay.queues[f"webhook {url}"].delivered == 1)
        self.assertEqual(len({r.headers["x-tmd-delivery"] for r in downstream.received}), 1)
        self.assertEqual(relay.queues[f"webhook {url}"].retries, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # idle: asleep

    async def test_permanent_failure(self) -> None:
        """A 4xx other than 408/429 is a dead letter at once; the next event goes on."""
        downstream, url = await start_downstream(self, [410])
        relay = self.relay([Webhook(url, SECRET)])
        for name in ("one", "two"):
            relay.event("room.created", name, {"name": name}).committed()
        queue = relay.queues[f"webhook {url}"]
        await self.until(lambda: queue.delivered == 1)
        self.assertEqual((queue.dead_letters, queue.retries, len(downstream.received)), (1, 0, 2))

    async def test_dead_downstream_does_not_delay_others(self) -> None:
        """Each destination has its own queue: one failing does not hold up another."""
        dead, dead_url = await start_downstream(self, [500] * 10)
        alive, alive_url = await start_downstream(self)
        relay = self.relay([Webhook(dead_url, SECRET), Webhook(alive_url, SECRET)])
        for n in range(3):
            relay.event("room.created", f"room-{n}", {}).committed()
        await self.until(lambda: len(alive.received) == 3)
        self.assertEqual(len(dead.received), 1)  # still waiting out its first back-off

    async def test_signature(self) -> None:
        """The signature is the hex HMAC-SHA256 of the raw body."""
        self.assertEqual(signature("key", b"The quick brown fox jumps over the lazy dog"),
                         "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")


class ReflektorTests(RelayTestCase):
    async def setUp(self) -> None:
        await super().setUp()
        self.one, one_url = await start_downstream(self)
        self.two, two_url = await start_downstream(self)
        self.relay_ = self.relay(token=TOKEN, downstreams=(one_url, two_url + "/base/"))
        self.server = await start_server(self, store=self.store, relay=self.relay_)

    async def test_replayed(self) -> None:
        """202 at once, then the same method, path, query, body and type to every downstream."""
        http = self.server.http
        code, answer = await http.call(
            "PUT", "/replay/a/b%20c?x=1&y=2", token=TOKEN,
            headers={"Content-Type": ["text/plain; charset=utf-8"]}, data=b"\x00raw body\xff")
        self.assertEqual(code, 202)
        await self.until(lambda: self.one.received and self.two.received)
        for received, uri in ((self.one.received[0], "/a/b%20c?x=1&y=2"),
                              (self.two.received[0], "/base/a/b%20c?x=1&y=2")):
            self.assertEqual(
                (received.method, received.uri, received.body, received.headers["content-type"],
                 received.headers["x-tmd-delivery"]),
                ("PUT", uri, b"\x00raw body\xff", "text/plain; charset=utf-8", answer["id"]))
            self.assertNotIn("authorization", received.headers)

    async def test_refused(self) -> None:
        """No token or a wrong one: 401; other methods: 405; nothing is replayed."""
        http = self.server.http
        for token in (None, "wrong", TOKEN + "x"):
            code, error = await http.call("POST", "/replay/x", {"a": 1}, token=token)
            self.assertEqual((code, error["error"]["code"]), (401, "unauthorized"), token)
        code, error = await http.call("GET", "/replay/x", token=TOKEN)
        self.assertEqual((code, error["error"]["code"]), (405, "method_not_allowed"))
        self.assertEqual(http.last_headers.getRawHeaders("allow"), ["POST, PUT, PATCH, DELETE"])
        code, error = await http.call("POST", "/replay/x", token=TOKEN, data=b"x" * 70_000)
        self.assertEqual(code, 413)
        self.clock.advance(0)
        self.assertEqual((self.one.received, self.two.received), ([], []))

    async def test_off(self) -> None:
        """Without a token and downstreams, the endpoint is not there (404)."""
        server = await start_server(self)
        code, error = await server.http.call("POST", "/replay/x", {}, token=TOKEN)
        self.assertEqual((code, error["error"]["code"]), (404, "not_found"))


class OutboxTests(RelayTestCase):
    async def test_restart_replays(self) -> None:
        """With the outbox on, what was not delivered before a stop is delivered after a start."""
        downstream, url = await start_downstream(self)
        downstream.hold = True  # never answers: nothing gets delivered
        hook = Webhook(url, SECRET)
        first = self.relay([hook], outbox=True)
        server = await start_server(self, store=self.store, relay=first)
        code, _ = await server.http.call("POST", "/api/v1/rooms", {"name": "physics-101"})
        self.assertEqual(code, 201)
        first.event("room.updated", "physics-101", {}).committed()  # in memory only
        await self.until(lambda: downstream.received)
        await self.stop(first, 0)
        stored = await self.store.pending_deliveries(10)
        self.assertEqual([d.event for d in stored], ["room.created"])

        downstream.hold = False
        downstream.release()  # too late: the first relay has stopped and ignores the answer
        second = self.relay([hook], outbox=True)
        await second.start()
        await self.until(lambda: second.queues[f"webhook {url}"].delivered == 1)
        replayed = verified(downstream.received[-1], SECRET)
        self.assertEqual((replayed["event"], replayed["id"]), ("room.created", stored[0].id))
        await eventually(lambda: self.pending_count() == 0)

    def pending_count(self) -> int:
        found: list[Delivery] = []
        self.store.pending_deliveries(10).addCallback(found.extend)
        return len(found)

    async def test_dead_letter_kept(self) -> None:
        """A dead letter stays in the outbox, never pending again; a delivered one is gone."""
        downstream, url = await start_downstream(self, [400])
        relay = self.relay([Webhook(url, SECRET)], outbox=True)
        for name in ("bad", "good"):
            pending = relay.event("room.created", name, {})
            await self.store.add_outbox(pending.outbox)
            pending.committed()
        queue = relay.queues[f"webhook {url}"]
        await self.until(lambda: queue.delivered == 1)
        self.assertEqual((queue.dead_letters, len(downstream.received)), (1, 2))
        await eventually(lambda: self.pending_count() == 0)

    async def test_unknown_destination(self) -> None:
        """Deliveries for a destination no longer configured are kept as dead, not sent."""
        _, url = await start_downstream(self)
        old = self.relay([Webhook("http://127.0.0.1:9/gone", SECRET)], outbox=True)
        await self.store.add_outbox(old.event("room.created", "x", {}).outbox)
        new = self.relay([Webhook(url, SECRET)], outbox=True)
        await new.start()
        self.assertEqual(self.pending_count(), 0)
        self.assertEqual(len(new.queues[f"webhook {url}"]), 0)


class StopTests(RelayTestCase):
    async def test_drains(self) -> None:
        """Stop delivers what is queued first."""
        downstream, url = await start_downstream(self, [500])
        relay = self.relay([Webhook(url, SECRET)])
        relay.event("room.created", "x", {}).committed()
        await self.until(lambda: downstream.received)
        stopping = self.stop(relay, 1000)
        self.clock.advance(LONGER_THAN_ANY_BACKOFF)
        await self.until(lambda: len(downstream.received) == 2)
        await stopping
        self.assertEqual(relay.queues[f"webhook {url}"].delivered, 1)

    async def test_deadline(self) -> None:
        """A destination that never answers is given up at the deadline; the rest is logged."""
        downstream, url = await start_downstream(self)
        downstream.hold = True
        relay = self.relay([Webhook(url, SECRET)])
        logged: list[dict[str, Any]] = []
        relay.log = Logger(observer=logged.append)
        for name in ("a", "b"):
            relay.event("room.created", name, {}).committed()
        await self.until(lambda: downstream.received)
        stopping = self.stop(relay, 5)
        self.clock.advance(5)
        await stopping
        self.assertEqual([formatEvent(e) for e in logged],
                         ["2 undelivered deliveries are dropped"])
        self.assertEqual(len(relay.queues[f"webhook {url}"]), 0)
        downstream.release()
