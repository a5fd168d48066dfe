"""
A webhook downstream down for hours, with the outbox on: nothing is lost, the queue
in memory stays within C{max_length} (the outbox holds the rest), and another
webhook keeps receiving every event at once.

The queues run on a L{Clock} the test steps through the outage; requests travel over
real loopback to L{Downstream}s, the one that is down answering 503.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger, capturedLogs, formatEvent

from tests.downstream import Received, start_downstream
from tests.helpers import eventually
from tests.test_relay import LONGER_THAN_ANY_BACKOFF, SECRET, RelayTestCase
from tmd.config import Webhook
from tmd.errors import Unavailable
from tmd.model import Delivery
from tmd.relay import CATCH_UP_RETRY, Relay
from tmd.store import IStore

MAX_LENGTH = 20
"""The queues' cap: far below what the outage leaves undelivered."""
STEP = 300
"""Seconds between batches of events."""
PER_STEP = 4
HOURS = 4


class FlakyOutbox:
    """The real store, except that its first read of one destination's outbox fails."""

    def __init__(self, store: IStore) -> None:
        self._store = store
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def pending_deliveries(self, limit: int, destination: str | None = None,
                           ) -> Deferred[list[Delivery]]:
        if destination is not None and not self.failed:
            self.failed = True
            return fail(Unavailable("the database is away"))
        return self._store.pending_deliveries(limit, destination)


def ids(received: list[Received]) -> list[str]:
    """The delivery ids received, first arrival of each, in order."""
    seen: dict[str, None] = {}
    for request in received:
        seen.setdefault(request.headers["x-tmd-delivery"], None)
    return list(seen)


class LongOutageTests(RelayTestCase):
    timeout = 120

    async def emit(self, relay: Relay, n: int) -> str:
        """One event, written to the outbox and then dispatched, as a change does; its id."""
        pending = relay.event("room.updated", "physics-101", {"n": n})
        await self.store.add_outbox(pending.outbox)
        pending.committed()
        return pending.deliveries[0].id

    async def pending(self, destination: str) -> list[Delivery]:
        return [d for d in await self.store.pending_deliveries(100_000)
                if d.destination == destination]

    async def test_hours_down(self) -> None:
        """
        For four hours of the clock one webhook answers 503 while events keep coming,
        four every five minutes: the other webhook has each batch before the clock
        moves on; the failing one's queue never holds more than C{max_length}. Once
        it answers again, it gets every event, in order, without a restart, and the
        outbox is empty.
        """
        down, down_url = await start_downstream(self)
        up, up_url = await start_downstream(self)
        down.answers = [503] * 1_000_000
        relay = self.relay([Webhook(down_url, SECRET), Webhook(up_url, SECRET)], outbox=True,
                           max_length=MAX_LENGTH)
        down_queue = relay.queues[f"webhook {down_url}"]
        up_queue = relay.queues[f"webhook {up_url}"]
        emitted: list[str] = []
        longest = 0
        for step in range(HOURS * 3600 // STEP):
            for i in range(PER_STEP):
                emitted.append(await self.emit(relay, step * PER_STEP + i))
            # Delivered (answered, not only received) before the clock moves on; and no
            # request of the failing queue in flight, as the step would time it out.
            await self.until(lambda: up_queue.delivered == len(emitted)
                             and not down_queue.in_flight)
            longest = max(longest, len(down_queue))
            self.clock.advance(STEP)
        self.assertEqual(ids(up.received), emitted)
        self.assertEqual(longest, MAX_LENGTH)
        self.assertGreater(len(down.received), 20)  # it was retried all along
        self.assertEqual(set(ids(down.received)), {emitted[0]})  # the head, again and again
        self.assertEqual(len(await self.pending(f"webhook {down_url}")), len(emitted))

        attempts = len(down.received)
        down.answers = []

        def caught_up() -> bool:
            """Between attempts, move the clock to the next (past any back-off)."""
            calls = self.clock.getDelayedCalls()
            if calls and not down_queue.in_flight:
                self.clock.advance(min(c.getTime() for c in calls) - self.clock.seconds())
            return down_queue.delivered == len(emitted)

        await eventually(caught_up, timeout=60)
        self.assertEqual(ids(down.received), emitted)
        self.assertEqual(down_queue.dead_letters, 0)
        await eventually(lambda: self.pending_left() == 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # all delivered: asleep
        Logger().info(
            "fault drill webhook outage: {hours} h down, {events} events, the other webhook"
            " had each batch before the clock moved on; the failing queue held at most"
            " {longest} (max_length), {attempts} attempts during the outage; after it,"
            " {delivered} delivered, {lost} lost, {dead} dead letters, outbox empty",
            hours=HOURS, events=len(emitted), longest=longest, attempts=attempts,
            delivered=len(ids(down.received)), lost=len(set(emitted) - set(ids(down.received))),
            dead=down_queue.dead_letters)

    def pending_left(self) -> int:
        found: list[Delivery] = []
        self.store.pending_deliveries(100_000).addCallback(found.extend)
        return len(found)

    async def test_outbox_read_fails(self) -> None:
        """
        If reading the outbox back fails (the database is away), the queue says so and
        reads again C{CATCH_UP_RETRY} seconds later; nothing is lost.
        """
        flaky = FlakyOutbox(self.store)
        self.store = flaky  # type: ignore[assignment]
        down, down_url = await start_downstream(self)
        down.answers = [503]
        relay = self.relay([Webhook(down_url, SECRET)], outbox=True, max_length=3)
        queue = relay.queues[f"webhook {down_url}"]
        emitted = [await self.emit(relay, n) for n in range(8)]
        await self.until(lambda: queue.retries == 1)
        with capturedLogs() as logged:
            self.clock.advance(LONGER_THAN_ANY_BACKOFF)  # the 3 queued are delivered
            await self.until(lambda: queue.delivered == 3 and flaky.failed)
        self.assertEqual([formatEvent(e) for e in logged if "could not read" in e["log_format"]],
                         [f"webhook 1 {down_url}: could not read the outbox (the database is"
                          f" away): trying again in {CATCH_UP_RETRY:g} s"])
        self.clock.advance(CATCH_UP_RETRY)
        await self.until(lambda: queue.delivered == 8)
        self.assertEqual(ids(down.received), emitted)

    async def test_without_outbox_bounded(self) -> None:
        """
        Without the outbox the queue still holds at most C{max_length}; what it
        refuses is dropped and counted (in memory only, as documented).
        """
        down, down_url = await start_downstream(self)
        down.answers = [503] * 1_000
        relay = self.relay([Webhook(down_url, SECRET)], max_length=MAX_LENGTH)
        queue = relay.queues[f"webhook {down_url}"]
        for n in range(3 * MAX_LENGTH):
            await self.emit(relay, n)
        self.assertEqual((len(queue), relay.dropped), (MAX_LENGTH, 2 * MAX_LENGTH))
        await self.until(lambda: queue.retries == 1)  # no request left in flight

