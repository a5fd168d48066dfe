"""
The relay: room events to webhooks, and the reflektor's requests to downstreams.

Every destination (a webhook URL, or a downstream base URL of the reflektor) has
its own L{ReplayQueue}, so a dead one never delays the others. A change's
deliveries are made before it is written: with the outbox on, the store writes them
in the change's own transaction, so none is lost in a crash and the next start
replays them (at-least-once: receivers drop duplicates by C{X-Tmd-Delivery}).
Without the outbox they live in memory only. After the commit they go to the queues.

A queue holds at most C{max_length} deliveries. Past that, without the outbox, they
are dropped; with it, they wait in the outbox, and the queue reads them back, in
order, a queueful at a time, each time it has drained: a long outage of one
destination costs neither memory nor deliveries.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, cast

import treq
from attrs import frozen
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from tmd import __version__
from tmd.config import Replay, Webhook
from tmd.model import Delivery
from tmd.origins import origin
from tmd.replay import PermanentFailure, QueueClosed, QueueFull, ReplayQueue
from tmd.store import IStore
from tmd.wire import encode, timestamp

REQUEST_TIMEOUT = 30.0
"""Seconds a destination has to answer one delivery."""
RESTORE_LIMIT = 1_000_000
"""Deliveries read back from the outbox at start, at most."""
CATCH_UP_RETRY = 30.0
"""Seconds before reading the outbox again when a read for a queue that fell behind failed."""


class DeliveryFailed(Exception):
    """The destination did not take the delivery; it is tried again later."""


@frozen
class Destination:
    """
    Where deliveries go: a webhook (signed with its secret) or a reflektor downstream.
    C{key} names it in the outbox; C{label}, in logs and metrics, leaves out all of the
    URL but its origin (webhook URLs often hold a secret in the path or query).
    """

    key: str
    url: str
    label: str
    secret: str | None = None

    def url_for(self, delivery: Delivery) -> str:
        if not delivery.path:
            return self.url
        return self.url.rstrip("/") + "/" + delivery.path.lstrip("/")


def signature(secret: str, body: bytes) -> str:
    """The C{X-Tmd-Signature} of C{body}: C{sha256=} and the hex HMAC-SHA256 with C{secret}."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@frozen
class Pending:
    """The deliveries of one change, made before it is written and sent after it commits."""

    relay: Relay
    deliveries: tuple[Delivery, ...]

    @property
    def outbox(self) -> tuple[Delivery, ...]:
        """What the store writes with the change: everything with the outbox on, else nothing."""
        return self.deliveries if self.relay.durable else ()

    def committed(self, seq: int | None = None) -> None:
        """The change is committed (a post with C{seq}): send its deliveries."""
        if self.deliveries:
            self.relay.dispatch(d.with_seq(seq) if seq is not None else d
                                for d in self.deliveries)


class Relay:
    """Webhooks and reflektor downstreams, each behind its own queue."""

    log = Logger()

    def __init__(self, store: IStore, clock: IReactorTime, webhooks: Sequence[Webhook] = (),
                 replay: Replay | None = None, http: HTTPClient | None = None) -> None:
        replay = replay if replay is not None else Replay()
        self._store = store
        self._clock = clock
        self._replay = replay
        self.durable = replay.outbox
        self._webhooks = [
            Destination(f"webhook {w.url}", w.url, f"webhook {n} {origin(w.url)}", w.secret)
            for n, w in enumerate(webhooks, 1)]
        self._downstreams = [Destination(f"replay {url}", url, f"replay {n} {origin(url)}")
                             for n, url in enumerate(replay.downstreams, 1)]
        self._destinations = {d.key: d for d in [*self._webhooks, *self._downstreams]}
        self._pool: HTTPConnectionPool | None = None
        self._http = http
        self.queues: dict[str, ReplayQueue[Delivery]] = {}
        for destination in self._destinations.values():
            queue: ReplayQueue[Delivery] = ReplayQueue(
                destination.label, partial(self._send, destination), clock,
                max_attempts=replay.max_attempts, max_age=replay.max_age,
                max_length=replay.max_length, describe=lambda d: f"delivery {d.id}")
            queue.on_delivered(self._delivered)
            queue.on_dead_letter(self._dead_letter)
            queue.on_drained(partial(self._drained, destination.key))
            self.queues[destination.key] = queue
        self.dropped = 0
        """Deliveries refused by a full queue (kept in the outbox when it is on)."""
        self._behind: dict[str, list[Delivery] | None] = {}
        """
        With the outbox on, the destinations whose queue was full: the outbox holds
        their newer deliveries until the queue reads them back. While it reads, the
        list gathers what is dispatched meanwhile (else None).
        """
        self._writes: dict[str, set[Deferred[None]]] = {}
        """Outbox updates (delivered, dead) under way, by destination: a read waits for them."""
        self._rereads: dict[str, IDelayedCall] = {}
        """Reads of the outbox to try again, after one failed, by destination."""

    @property
    def reflektor(self) -> bool:
        """Whether the C{/replay/} endpoint is on."""
        return self._replay.token is not None

    def authorized(self, token: str | None) -> bool:
        """Whether C{token} is the reflektor's token (compared in constant time)."""
        expected = self._replay.token
        return (token is not None and expected is not None
                and hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8")))

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def event(self, name: str, room: str, data: dict[str, Any]) -> Pending:
        """
        The webhook deliveries of event C{name} in C{room}. In C{message.created}'s
        C{data}, a null C{seq} stands for the seq the store allocates.
        """
        if not self._webhooks:
            return Pending(self, ())
        event_id = str(uuid.uuid4())
        now = self.now_ms()
        body = encode({"id": event_id, "event": name, "created_at": timestamp(now),
                       "room": room, "data": data})
        return Pending(self, tuple(
            Delivery(id=event_id, destination=hook.key, created_at=now, method="POST", path="",
                     content_type="application/json", event=name, body=body)
            for hook in self._webhooks))

    async def emit(self, name: str, room: str, data: dict[str, Any]) -> None:
        """Deliver an event that no single write carries (the reaper's): outbox, then send."""
        pending = self.event(name, room, data)
        if pending.outbox:
            await self._store.add_outbox(pending.outbox)
        pending.committed()

    async def accept(self, method: str, path: str, content_type: str | None,
                     body: bytes) -> str:
        """Take a reflektor request for every downstream (durably, with the outbox); its id."""
        delivery_id = str(uuid.uuid4())
        now = self.now_ms()
        deliveries = [
            Delivery(id=delivery_id, destination=downstream.key, created_at=now, method=method,
                     path=path, content_type=content_type, event=None, body=body)
            for downstream in self._downstreams]
        if self.durable:
            await self._store.add_outbox(deliveries)
        self.dispatch(deliveries)
        return delivery_id

    def dispatch(self, deliveries: Iterable[Delivery]) -> None:
        """
        Queue each delivery for its destination; a full queue refuses, and says so. With
        the outbox on, a destination that fell behind takes its deliveries from the
        outbox (where these already are) once its queue has drained.
        """
        for delivery in deliveries:
            key = delivery.destination
            if key in self._behind:
                self.dropped += 1
                reading = self._behind[key]
                if reading is not None:  # the read under way may be too early to see it
                    reading.append(delivery)
                continue
            try:
                self.queues[key].push(delivery, delivery.created_at / 1000)
            except QueueFull:
                self.dropped += 1
                if self.durable:
                    self._behind[key] = None
                    self.log.warn("{destination}: the queue is full: deliveries wait in the"
                                  " outbox until it has room", destination=self.queues[key].name)
                else:
                    self.log.warn("{destination}: delivery {id} dropped: the queue is full",
                                  destination=self.queues[key].name, id=delivery.id)
            except QueueClosed:
                self.dropped += 1
                where = "kept in the outbox for the next start" if self.durable else "dropped"
                self.log.warn("{destination}: delivery {id} {where}: the queue is closed",
                              destination=self.queues[key].name, id=delivery.id, where=where)

    def _drained(self, key: str) -> None:
        """C{key}'s queue is empty: if it fell behind, read its next deliveries from the outbox."""
        if key in self._behind and self._behind[key] is None:
            Deferred.fromCoroutine(self._catch_up(key))

    async def _catch_up(self, key: str) -> None:
        """Queue C{key}'s oldest deliveries from the outbox, up to a queueful, in order."""
        queue = self.queues[key]
        arrived: list[Delivery] = []
        self._behind[key] = arrived
        limit = self._replay.max_length
        try:
            await DeferredList(list(self._writes.get(key, ())))  # those delivered are gone
            stored = await self._store.pending_deliveries(limit, key)
        except Exception as e:
            self._behind[key] = None
            self.log.warn("{destination}: could not read the outbox ({error}): trying again in"
                          " {delay:g} s", destination=queue.name, error=e, delay=CATCH_UP_RETRY)
            self._rereads[key] = self._clock.callLater(CATCH_UP_RETRY, self._reread, key)
            return
        read = {delivery.id for delivery in stored}
        try:
            for delivery in [*stored, *(d for d in arrived if d.id not in read)]:
                queue.push(delivery, delivery.created_at / 1000)
        except QueueFull:  # a queueful: the next drain reads on
            self._behind[key] = None
            return
        except QueueClosed:
            return
        if len(stored) < limit:
            del self._behind[key]
            self.log.info("{destination}: caught up with the outbox", destination=queue.name)
        else:
            self._behind[key] = None

    def _reread(self, key: str) -> None:
        del self._rereads[key]
        self._drained(key)

    def _track(self, key: str, write: Deferred[None]) -> None:
        """Keep C{write}, an outbox update for C{key}, until it is done."""
        writes = self._writes.setdefault(key, set())
        writes.add(write)

        def done(result: object) -> object:
            writes.discard(write)
            return result

        write.addBoth(done)

    async def _send(self, destination: Destination, delivery: Delivery) -> None:
        headers = Headers({"User-Agent": [f"tmd/{__version__}"],
                           "X-Tmd-Delivery": [delivery.id]})
        if delivery.content_type is not None:
            headers.setRawHeaders("Content-Type", [delivery.content_type])
        if delivery.event is not None:
            headers.setRawHeaders("X-Tmd-Event", [delivery.event])
        if destination.secret is not None:
            headers.setRawHeaders("X-Tmd-Signature", [signature(destination.secret, delivery.body)])
        if self._http is None:
            self._pool = HTTPConnectionPool(self._clock, persistent=True)
            self._http = HTTPClient(Agent(self._clock, pool=self._pool))  # TLS: hostname verified
        response = await self._http.request(
            delivery.method, destination.url_for(delivery), data=delivery.body or None,
            headers=headers, timeout=REQUEST_TIMEOUT,
            reactor=cast(Any, self._clock))  # the timeout runs on the injected clock
        await treq.collect(response, lambda _: None)  # read to the end: the connection is reused
        code = response.code
        if 200 <= code < 300:
            return
        if 400 <= code < 500 and code not in (408, 429):
            raise PermanentFailure(f"HTTP {code}")
        raise DeliveryFailed(f"HTTP {code}")

    def _delivered(self, delivery: Delivery) -> None:
        if self.durable:
            self._track(delivery.destination, self._store.delivered(delivery).addErrback(
                lambda f: self.log.failure("could not clear delivery {id}", f, id=delivery.id)))

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        if self.durable:
            self._track(delivery.destination, self._store.dead_letter(delivery).addErrback(
                lambda f: self.log.failure("could not keep dead delivery {id}", f, id=delivery.id)))

    async def start(self) -> None:
        """With the outbox on, queue again what a previous run left undelivered."""
        if not self.durable:
            return
        left = await self._store.pending_deliveries(RESTORE_LIMIT)
        known = [d for d in left if d.destination in self._destinations]
        for gone in (d for d in left if d.destination not in self._destinations):
            kind, _, url = gone.destination.partition(" ")
            self.log.warn("delivery {id} is for {destination}, which is no longer configured:"
                          " kept as dead", id=gone.id, destination=f"{kind} {origin(url)}")
            await self._store.dead_letter(gone)
        if known:
            self.log.info("replaying {count} deliveries left in the outbox", count=len(known))
        self.dispatch(known)

    async def stop(self, timeout: float) -> None:
        """Deliver what is queued, for up to C{timeout} seconds; then keep or drop the rest."""
        draining = [queue.drain() for queue in self.queues.values()]
        try:
            await DeferredList(draining, consumeErrors=True).addTimeout(timeout, self._clock)
        except TimeoutError:
            pass
        left = sum(len(queue.stop()) for queue in self.queues.values())
        for reread in self._rereads.values():
            reread.cancel()
        self._rereads.clear()
        if left:
            where = "stay in the outbox for the next start" if self.durable else "are dropped"
            self.log.warn("{count} undelivered deliveries {where}", count=left, where=where)
        if self._pool is not None:
            await self._pool.closeCachedConnections()
