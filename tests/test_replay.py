"""
Tests for L{tmd.replay}: order, back-off, dead letters, pause/resume/drain/stop, idleness.

A L{Clock} drives every queue, and a fake downstream answers each attempt as the test
scripts it, holding some answers in Deferreds the test fires by hand. A property test
(hypothesis) checks, for random items, answers, pauses and delays, that each item is
delivered once, in order, or dead-lettered once, and that the queue then sleeps.
"""

from __future__ import annotations

from random import Random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tmd.replay import (
    Backoff,
    PermanentFailure,
    QueueClosed,
    QueueFull,
    ReplayQueue,
)

START = 1_764_000_000.0
"""The clock's time when each test starts, in seconds."""
HOLD = "hold"
"""A downstream answer: a Deferred the test fires."""
NAMESPACE = "tmd.replay.ReplayQueue"


class Downstream:
    """
    A fake downstream: records every attempt, and answers with the next of C{script}
    (None for success, an exception to raise, or L{HOLD}), then with C{otherwise}.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.script: list[Exception | str | None] = []
        self.otherwise: Exception | None = None
        self.attempts: list[tuple[float, str]] = []
        """(seconds since START, item) of every attempt."""
        self.held: list[Deferred[None]] = []

    def __call__(self, item: str) -> Deferred[None] | None:
        self.attempts.append((self.clock.seconds() - START, item))
        answer = self.script.pop(0) if self.script else self.otherwise
        if answer == HOLD:
            self.held.append(Deferred())
            return self.held[-1]
        if isinstance(answer, Exception):
            raise answer
        return None

    def items(self) -> list[str]:
        return [item for _, item in self.attempts]

    def times(self) -> list[float]:
        return [when for when, _ in self.attempts]


class ReplayQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.downstream = Downstream(self.clock)
        self.delivered: list[str] = []
        self.dead: list[tuple[str, str]] = []
        self.drained: list[float] = []

    def queue(self, task: Any = None, **options: Any) -> ReplayQueue[str]:
        """A queue to L{Downstream} (or C{task}) whose observers record into this test."""
        options.setdefault("random", lambda: 0.5)  # the middle of the jitter: no change
        queue = ReplayQueue("hooks.example", task or self.downstream, self.clock, **options)
        queue.on_delivered(self.delivered.append)
        queue.on_dead_letter(lambda item, reason: self.dead.append((item, reason)))
        queue.on_drained(lambda: self.drained.append(self.clock.seconds() - START))
        return queue

    def run_until_idle(self) -> None:
        """Advance the clock from one delayed call to the next until none is left."""
        while calls := self.clock.getDelayedCalls():
            self.clock.advance(min(call.getTime() for call in calls) - self.clock.seconds())

    def call_times(self) -> list[float]:
        return [call.getTime() - START for call in self.clock.getDelayedCalls()]

    def test_sleeps_until_push(self) -> None:
        """
        An empty queue has nothing scheduled; a push schedules one attempt at once (not
        within C{push}), and once the queue is empty again nothing is left scheduled.
        """
        queue = self.queue()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        queue.push("a")
        self.assertEqual((self.downstream.items(), self.call_times()), ([], [0]))
        self.clock.advance(0)
        self.assertEqual((self.downstream.items(), self.delivered), (["a"], ["a"]))
        self.assertEqual((len(queue), queue.in_flight, queue.delivered), (0, 0, 1))
        self.assertEqual(self.drained, [0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_at_a_time_in_order(self) -> None:
        """Item n + 1 is never attempted before item n is done, however long that takes."""
        queue = self.queue()
        self.downstream.script = [HOLD, HOLD, None, HOLD]
        for item in "abc":
            queue.push(item)
        self.clock.advance(0)
        self.clock.advance(100)
        self.assertEqual(self.downstream.items(), ["a"])
        self.assertEqual((len(queue), queue.in_flight), (3, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])  # waiting on the attempt, not a timer
        self.downstream.held[0].callback(None)
        self.assertEqual((self.delivered, queue.in_flight, self.call_times()), (["a"], 0, [100]))
        self.clock.advance(0)
        self.downstream.held[1].errback(RuntimeError("503 Service Unavailable"))
        self.clock.advance(0.5)  # b waits out a second's back-off, and c waits for b
        self.assertEqual(self.downstream.items(), ["a", "b"])
        self.clock.advance(0.5)
        self.assertEqual(self.downstream.items(), ["a", "b", "b", "c"])
        self.assertEqual(self.delivered, ["a", "b"])
        self.downstream.held[2].callback(None)
        self.assertEqual(self.delivered, ["a", "b", "c"])
        self.assertEqual((queue.delivered, queue.retries, queue.dead_letters), (3, 1, 0))

    def test_backoff_schedule(self) -> None:
        """Retries wait first, then factor times longer each, at most cap; then a dead letter."""
        queue = self.queue(backoff=Backoff(first=1, factor=2, cap=5, jitter=0.2), max_attempts=6)
        self.downstream.otherwise = RuntimeError("503 Service Unavailable")
        queue.push("a")
        self.run_until_idle()
        self.assertEqual(self.downstream.times(), [0, 1, 3, 7, 12, 17])
        self.assertEqual(self.dead, [("a", "6 attempts failed, the last with RuntimeError:"
                                           " 503 Service Unavailable")])
        self.assertEqual((queue.retries, queue.dead_letters, queue.delivered), (5, 1, 0))
        self.assertEqual((len(queue), self.drained), (0, [17]))

    def test_jitter(self) -> None:
        """The injected C{random} scales each delay within 1 ± jitter."""
        draws = iter([0.0, 0.75])
        queue = self.queue(backoff=Backoff(first=10, jitter=0.2), random=lambda: next(draws))
        self.downstream.script = [RuntimeError(), RuntimeError()]
        queue.push("a")
        self.run_until_idle()
        self.assertEqual(self.downstream.times(), [0, 8, 8 + 22])  # 10 x 0.8, then 20 x 1.1

    def test_next_item_after_dead_letter(self) -> None:
        """Once an item is given up on, the next one goes at once."""
        queue = self.queue(max_attempts=3)
        self.downstream.script = [RuntimeError(), RuntimeError(), RuntimeError()]
        queue.push("a")
        queue.push("b")
        self.run_until_idle()
        self.assertEqual(self.downstream.attempts, [(0, "a"), (1, "a"), (3, "a"), (3, "b")])
        self.assertEqual(([item for item, _ in self.dead], self.delivered), (["a"], ["b"]))
        self.assertEqual(self.drained, [3])

    def test_dead_letter_logged(self) -> None:
        """
        A dead letter is one warning naming the queue, the item by its number (or as
        C{describe} puts it) and the reason, never the item itself.
        """
        secret = "https://hooks.example/T0/B0/s3cret"
        self.downstream.otherwise = PermanentFailure("404 Not Found")
        plain = self.queue()
        described = self.queue(describe=lambda item: "the room physics-101")
        with capturedLogs() as events:
            plain.push("first")
            plain.push(secret)
            self.run_until_idle()
            described.push(secret)
            self.run_until_idle()
        warnings = [formatEvent(e) for e in events
                    if e.get("log_namespace") == NAMESPACE and e["log_level"] == LogLevel.warn]
        self.assertEqual(warnings, [
            "replay queue hooks.example: gave up on item #1: permanent failure:"
            " PermanentFailure: 404 Not Found",
            "replay queue hooks.example: gave up on item #2: permanent failure:"
            " PermanentFailure: 404 Not Found",
            "replay queue hooks.example: gave up on the room physics-101: permanent failure:"
            " PermanentFailure: 404 Not Found"])
        self.assertFalse([e for e in events if "s3cret" in formatEvent(e)])

    def test_permanent_failure(self) -> None:
        """A task failing with L{PermanentFailure} has its item dead-lettered, never retried."""
        queue = self.queue()
        self.downstream.script = [HOLD]
        queue.push("a")
        queue.push("b")
        self.clock.advance(0)
        self.downstream.held[0].errback(PermanentFailure("410 Gone"))
        self.assertEqual(self.dead, [("a", "permanent failure: PermanentFailure: 410 Gone")])
        self.run_until_idle()
        self.assertEqual((self.downstream.items(), self.delivered), (["a", "b"], ["b"]))
        self.assertEqual(queue.retries, 0)

    def test_too_old_for_next_attempt(self) -> None:
        """An item that would pass C{max_age} before its next attempt is given up on at once."""
        queue = self.queue(max_age=10, backoff=Backoff(first=4, jitter=0))
        self.downstream.otherwise = RuntimeError("timeout")
        queue.push("a")
        self.clock.advance(0)
        self.clock.advance(4)  # 4 s old; the next attempt would be at 12 s
        self.assertEqual(self.downstream.times(), [0, 4])
        self.assertEqual(self.dead, [("a", "would be older than 10 s at its next attempt;"
                                           " the last failed with RuntimeError: timeout")])
        self.assertEqual((self.drained, self.clock.getDelayedCalls()), ([4], []))

    def test_too_old_when_its_turn_comes(self) -> None:
        """An item that waited past C{max_age} behind others is given up on, unattempted."""
        queue = self.queue(max_age=10)
        self.downstream.script = [HOLD]
        queue.push("a")
        queue.push("b")
        self.clock.advance(0)
        self.clock.advance(11)
        queue.push("c")
        self.downstream.held[0].callback(None)
        self.run_until_idle()
        self.assertEqual(self.downstream.items(), ["a", "c"])
        self.assertEqual((self.delivered, self.dead), (["a", "c"], [("b", "older than 10 s")]))

    def test_restored_item_keeps_its_age(self) -> None:
        """C{max_age} counts from the C{enqueued_at} given, for items restored from the outbox."""
        queue = self.queue(max_age=60)
        queue.push("stale", enqueued_at=START - 61)
        queue.push("fresh", enqueued_at=START - 59)
        self.run_until_idle()
        self.assertEqual(self.downstream.items(), ["fresh"])
        self.assertEqual(self.dead, [("stale", "older than 60 s")])

    def test_pause_and_resume_backoff(self) -> None:
        """
        Pausing cancels a back-off timer; resuming re-arms it for what remained, or for
        now if it is past.
        """
        queue = self.queue(backoff=Backoff(first=10, jitter=0))
        self.downstream.script = [RuntimeError(), RuntimeError()]
        queue.push("a")
        self.clock.advance(0)
        self.assertEqual(self.call_times(), [10])
        self.clock.advance(4)
        queue.pause()
        self.assertEqual((queue.paused, self.clock.getDelayedCalls()), (True, []))
        self.clock.advance(2)
        queue.resume()
        self.assertEqual((queue.paused, self.call_times()), (False, [10]))
        self.clock.advance(4)  # second attempt at 10, fails: the next is due at 30
        queue.pause()
        self.clock.advance(100)
        self.assertEqual(self.downstream.times(), [0, 10])
        queue.resume()
        self.assertEqual(self.call_times(), [110])
        self.clock.advance(0)
        self.assertEqual((self.downstream.times(), self.delivered), ([0, 10, 110], ["a"]))

    def test_pause_lets_attempt_finish(self) -> None:
        """An attempt in flight when the queue pauses completes; the next waits for resume."""
        queue = self.queue()
        self.downstream.script = [HOLD]
        queue.push("a")
        queue.push("b")
        self.clock.advance(0)
        queue.pause()
        queue.push("c")
        self.downstream.held[0].callback(None)
        self.assertEqual((self.delivered, self.clock.getDelayedCalls()), (["a"], []))
        queue.resume()
        self.clock.advance(0)
        self.assertEqual(self.delivered, ["a", "b", "c"])

    def test_drain(self) -> None:
        """
        C{drain} resumes a paused queue, refuses new items, and fires once the last item
        is done, after the C{drained} observers.
        """
        queue = self.queue()
        self.downstream.script = [HOLD]
        queue.push("a")
        queue.push("b")
        queue.pause()
        drained = queue.drain()
        self.assertFalse(queue.paused)
        self.assertRaises(QueueClosed, queue.push, "c")
        self.clock.advance(0)
        self.assertNoResult(drained)
        self.downstream.held[0].callback(None)
        self.assertNoResult(drained)
        drained.addCallback(lambda _: self.assertEqual(self.drained, [0]))
        self.clock.advance(0)
        self.successResultOf(drained)
        self.assertEqual((self.delivered, self.clock.getDelayedCalls()), (["a", "b"], []))
        self.successResultOf(queue.drain())

    def test_drain_empty(self) -> None:
        """An empty queue is drained at once, and takes nothing more."""
        queue = self.queue()
        self.successResultOf(queue.drain())
        self.assertRaises(QueueClosed, queue.push, "a")
        self.assertEqual((self.drained, self.clock.getDelayedCalls()), ([], []))

    def test_drain_deadline_then_stop(self) -> None:
        """
        At shutdown: a drain given a deadline times out, and C{stop} hands back what is
        left, in order, the item being retried first.
        """
        queue = self.queue()
        self.downstream.otherwise = RuntimeError("connection refused")
        queue.push("a")
        queue.push("b")
        drained = queue.drain().addTimeout(30, self.clock)
        self.clock.pump([1] * 30)
        self.failureResultOf(drained, TimeoutError)
        self.assertEqual(queue.stop(), ["a", "b"])
        self.assertEqual((len(queue), self.clock.getDelayedCalls()), (0, []))
        self.assertEqual((self.delivered, self.dead, self.drained), ([], [], []))

    def test_stop_in_flight(self) -> None:
        """
        C{stop} gives back the item in flight too; its attempt finishes unheeded. Pushes
        are refused, and a waiting drain is cancelled.
        """
        queue = self.queue()
        self.downstream.script = [HOLD]
        queue.push("a")
        queue.push("b")
        self.clock.advance(0)
        drained = queue.drain()
        self.assertEqual(queue.stop(), ["a", "b"])
        self.failureResultOf(drained, CancelledError)
        self.assertRaises(QueueClosed, queue.push, "c")
        self.downstream.held[0].errback(RuntimeError("too late"))
        self.assertEqual((queue.in_flight, queue.retries, self.clock.getDelayedCalls()),
                         (0, 0, []))
        self.assertEqual((self.delivered, self.dead, self.drained), ([], [], []))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_queue_full(self) -> None:
        """Past C{max_length} items (the one in flight included), C{push} raises L{QueueFull}."""
        queue = self.queue(max_length=2)
        self.downstream.script = [HOLD]
        queue.push("a")
        self.clock.advance(0)
        queue.push("b")
        with self.assertRaises(QueueFull) as caught:
            queue.push("c")
        self.assertIn("hooks.example", str(caught.exception))
        self.downstream.held[0].callback(None)
        queue.push("c")
        self.run_until_idle()
        self.assertEqual(self.delivered, ["a", "b", "c"])

    def test_push_from_observer(self) -> None:
        """
        An observer may push: its item goes after the others, and the queue is drained
        only once it is done.
        """
        queue = self.queue()
        queue.on_delivered(lambda item: queue.push(item + "+") if len(item) < 3 else None)
        queue.push("a")
        queue.push("b")
        self.clock.advance(0)
        self.assertEqual(self.delivered, ["a", "b", "a+", "b+", "a++", "b++"])
        self.assertEqual((self.drained, self.clock.getDelayedCalls()), ([0], []))

    def test_push_from_task(self) -> None:
        """A task may push into its own queue: its item waits until the current one is done."""
        def task(item: str) -> Deferred[None] | None:
            if item == "a":
                queue.push("b")
            return self.downstream(item)

        queue = self.queue(task)
        self.downstream.script = [HOLD]
        queue.push("a")
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual((self.downstream.items(), queue.in_flight, len(queue)), (["a"], 1, 2))
        self.downstream.held[0].callback(None)
        self.clock.advance(0)
        self.assertEqual((self.downstream.items(), self.delivered), (["a", "b"], ["a", "b"]))

    def test_observer_errors_logged(self) -> None:
        """A failing observer is logged; the other observers and the queue go on."""
        queue = self.queue(max_attempts=1)
        queue.on_delivered(lambda item: 1 / 0)
        queue.on_dead_letter(lambda item, reason: 1 / 0)
        queue.on_drained(lambda: 1 / 0)
        after: list[str] = []
        queue.on_delivered(after.append)
        self.downstream.script = [RuntimeError()]
        queue.push("a")
        queue.push("b")
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 3)
        self.assertEqual(([item for item, _ in self.dead], self.delivered, after),
                         (["a"], ["b"], ["b"]))
        self.assertEqual(self.drained, [0])

    def test_coroutine_task(self) -> None:
        """A task may be an C{async def}."""
        async def task(item: str) -> None:
            await answers.pop(0)

        answers: list[Deferred[None]] = [Deferred(), Deferred()]
        first, second = answers
        queue = self.queue(task)
        queue.push("a")
        self.clock.advance(0)
        first.errback(RuntimeError())
        self.clock.advance(1)
        second.callback(None)
        self.assertEqual((self.delivered, queue.retries), (["a"], 1))

    def test_synchronous_results_do_not_recurse(self) -> None:
        """Thousands of items answered at once go one per reactor turn, without recursion."""
        queue = self.queue()
        for i in range(5000):
            queue.push(str(i))
        self.clock.advance(0)
        self.assertEqual(self.delivered, [str(i) for i in range(5000)])

    def test_downstreams_independent(self) -> None:
        """One queue per downstream: one that is down does not delay another."""
        down = Downstream(self.clock)
        down.otherwise = RuntimeError("connection refused")
        dead_queue = ReplayQueue("down.example", down, self.clock, random=lambda: 0.5)
        queue = self.queue()
        for item in "abc":
            dead_queue.push(item)
            queue.push(item)
        self.clock.pump([0, 1, 2])
        self.assertEqual((self.delivered, down.items()), (["a", "b", "c"], ["a", "a", "a"]))
        self.assertEqual(dead_queue.stop(), ["a", "b", "c"])


class BackoffTests(SynchronousTestCase):
    def test_delays(self) -> None:
        """C{first * factor ** (n - 1)}, at most C{cap}, scaled by C{1 ± jitter} by C{random()}."""
        backoff = Backoff(first=2, factor=3.0, cap=50, jitter=0.25)
        self.assertEqual([backoff.delay(n, lambda: 0.5) for n in range(1, 6)],
                         [2, 6, 18, 50, 50])
        self.assertEqual((backoff.delay(1, lambda: 0.0), backoff.delay(1, lambda: 1.0)),
                         (1.5, 2.5))
        self.assertEqual(backoff.delay(100_000, lambda: 0.5), 50)  # no overflow past the cap

    def test_defaults(self) -> None:
        """One second, doubling, at most five minutes, ± 20 %."""
        backoff = Backoff()
        self.assertEqual([backoff.delay(n, lambda: 0.5) for n in (1, 2, 9, 10)],
                         [1, 2, 256, 300])
        self.assertAlmostEqual(backoff.delay(10, lambda: 0.0), 240)

    def test_invalid(self) -> None:
        """Settings that could make a negative, zero or shrinking delay are refused."""
        for settings_ in ({"first": 0}, {"factor": 0.5}, {"cap": 0}, {"jitter": -0.1},
                          {"jitter": 1.5}):
            self.assertRaises(ValueError, Backoff, **settings_)


OUTCOMES = st.sampled_from(["ok", "fail", "permanent", "later ok", "later fail",
                            "later permanent"])
STEPS = st.sampled_from(["push", "fire", "advance", "wait", "pause", "resume"])


def answer(outcome: str, item: int, successes: list[int]) -> None:
    """What a task does for C{outcome}, now or when the test fires a held Deferred."""
    if outcome.endswith("permanent"):
        raise PermanentFailure("410 Gone")
    if outcome.endswith("fail"):
        raise RuntimeError("503 Service Unavailable")
    successes.append(item)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_each_item_once_in_order(self, data: st.DataObject) -> None:
        """
        Whatever each attempt answers, now or later, and whenever the queue is paused,
        resumed or the clock moves: every item is delivered once, in push order, or
        dead-lettered once; no item is attempted before the ones pushed earlier are done,
        nor while another attempt is in flight; a drain then leaves nothing scheduled.
        """
        clock = Clock()
        items = list(range(data.draw(st.integers(0, 8), label="items")))
        # Drawn up front: hypothesis ends an example by raising, which a task must not catch.
        answers = data.draw(st.lists(OUTCOMES, max_size=40), label="answers")  # then "ok"
        held: list[tuple[Deferred[None], str, int]] = []
        successes: list[int] = []
        delivered: list[int] = []
        dead: list[int] = []
        violations: list[str] = []

        def task(item: int) -> Deferred[None] | None:
            if held:
                violations.append(f"{item} attempted while {held[0][2]} was in flight")
            if not set(range(item)) <= set(delivered + dead):
                violations.append(f"{item} attempted before all earlier items were done")
            outcome = answers.pop(0) if answers else "ok"
            if outcome.startswith("later"):
                held.append((Deferred(), outcome, item))
                return held[-1][0]
            answer(outcome, item, successes)
            return None

        def fire() -> None:
            waiting, outcome, item = held.pop(0)
            try:
                answer(outcome, item, successes)
            except Exception:
                waiting.errback()
            else:
                waiting.callback(None)

        def next_call() -> None:
            when = min(call.getTime() for call in clock.getDelayedCalls())
            clock.advance(when - clock.seconds())

        queue = ReplayQueue("property", task, clock, max_attempts=4, max_age=20,
                            max_length=len(items) or 1,
                            backoff=Backoff(first=1, factor=2, cap=8, jitter=0.5),
                            random=Random(data.draw(st.integers(0, 2**32), label="seed")).random)
        queue.on_delivered(delivered.append)
        queue.on_dead_letter(lambda item, reason: dead.append(item))
        unpushed = list(items)
        for _ in range(data.draw(st.integers(0, 40), label="steps")):
            step = data.draw(STEPS, label="step")
            if step == "push" and unpushed:
                queue.push(unpushed.pop(0))
            elif step == "fire" and held:
                fire()
            elif step == "advance" and clock.getDelayedCalls():
                next_call()
            elif step == "wait":
                clock.advance(data.draw(st.floats(0, 10), label="seconds"))
            elif step == "pause":
                queue.pause()
            elif step == "resume":
                queue.resume()
        for item in unpushed:
            queue.push(item)
        drained = queue.drain()
        for _ in range(1000):
            if held:
                fire()
            elif clock.getDelayedCalls():
                next_call()
            else:
                break

        self.assertEqual(violations, [])
        self.assertEqual(sorted(delivered + dead), items)
        self.assertEqual(delivered, sorted(delivered))
        self.assertEqual(successes, delivered)
        self.assertEqual((queue.delivered, queue.dead_letters), (len(delivered), len(dead)))
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual((len(queue), queue.in_flight, clock.getDelayedCalls()), (0, 0, []))
