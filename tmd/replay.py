"""
The replay queue: TodaysMeet's in-memory "dq", delivering items to one downstream.

Each downstream gets its own L{ReplayQueue}, so a dead one never delays the others.
A queue hands its items, oldest first and one at a time, to a task (a webhook POST,
say); a failed attempt is retried after a capped exponential back-off with jitter,
until the item is delivered or dead-lettered (too many attempts, too old, or a
L{PermanentFailure}). The queue's length is capped and past the cap C{push} refuses,
so the caller decides what a refusal means. An empty queue does nothing at all: no
timer, no polling, until the next C{push}. All timing goes through the clock given.
"""

from __future__ import annotations

import random as _random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from attrs import field, frozen
from attrs.validators import ge, gt, le
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")

MAX_ATTEMPTS = 20
"""Attempts at one item: with the default back-off, about an hour of retries."""
MAX_AGE = 3600.0
"""Seconds after its push when an item is given up on."""
MAX_LENGTH = 10_000
"""Items a queue holds; past them, C{push} raises L{QueueFull}."""


class PermanentFailure(Exception):
    """Raised by a task for a failure that retrying cannot cure (an HTTP 4xx): dead-letter now."""


class QueueFull(Exception):
    """C{push} past the queue's C{max_length}: the item was not taken."""


class QueueClosed(Exception):
    """C{push} after C{drain} or C{stop}: the item was not taken."""


@frozen
class Backoff:
    """
    How long to wait after a failed attempt: C{first} seconds, times C{factor} after
    each further failure, at most C{cap}; then scaled by a random factor within
    C{1 ± jitter}, so that queues failing together do not retry together.
    """

    first: float = field(default=1.0, validator=gt(0))
    factor: float = field(default=2.0, validator=ge(1))
    cap: float = field(default=300.0, validator=gt(0))
    jitter: float = field(default=0.2, validator=[ge(0), le(1)])

    def delay(self, attempt: int, random: Callable[[], float]) -> float:
        """Seconds to wait after the C{attempt}th (from 1) failed; C{random()} is in [0, 1)."""
        try:
            base = min(self.cap, self.first * self.factor ** (attempt - 1))
        except OverflowError:  # far past the cap
            base = self.cap
        return base * (1 - self.jitter + 2 * self.jitter * random())


BACKOFF = Backoff()


class _Entry(Generic[T]):
    def __init__(self, item: T, enqueued_at: float, number: int) -> None:
        self.item = item
        self.enqueued_at = enqueued_at
        self.number = number
        self.attempts = 0
        self.not_before = 0.0
        """When the next attempt may start: after a back-off, if the last failed."""


class ReplayQueue(Generic[T]):
    """
    Items for one downstream, delivered in order by C{task}, one attempt at a time.

    C{task(item)} returns anything (delivered), or a Deferred or coroutine that fires
    with anything; raising or failing asks for a retry, and raising
    L{PermanentFailure} for a dead letter at once. Item C{n + 1} is never attempted
    before item C{n} is delivered or dead-lettered. C{describe(item)} names an item in
    the log, which otherwise says only its number (never its contents).
    """

    log = Logger()

    def __init__(self, name: str, task: Callable[[T], object], clock: IReactorTime, *,
                 max_attempts: int = MAX_ATTEMPTS, max_age: float = MAX_AGE,
                 max_length: int = MAX_LENGTH, backoff: Backoff = BACKOFF,
                 random: Callable[[], float] = _random.random,
                 describe: Callable[[T], str] | None = None) -> None:
        self.name = name
        self._task = task
        self._clock = clock
        self._max_attempts = max_attempts
        self._max_age = max_age
        self._max_length = max_length
        self._backoff = backoff
        self._random = random
        self._describe = describe
        self._entries: deque[_Entry[T]] = deque()
        self._pushed = 0
        self._call: IDelayedCall | None = None
        """The next attempt, when it waits for the clock (none while paused or in flight)."""
        self._attempting = False
        self._paused = False
        self._accepting = True
        self._stopped = False
        self._drain_waiters: list[Deferred[None]] = []
        self._delivered_observers: list[Callable[[T], object]] = []
        self._dead_letter_observers: list[Callable[[T, str], object]] = []
        self._drained_observers: list[Callable[[], object]] = []
        self.delivered = 0
        """Items delivered."""
        self.dead_letters = 0
        """Items given up on."""
        self.retries = 0
        """Failed attempts followed by another."""

    def __len__(self) -> int:
        """Items not yet delivered nor dead-lettered, the one in flight included."""
        return len(self._entries)

    @property
    def in_flight(self) -> int:
        """1 while an attempt is running, else 0."""
        return int(self._attempting)

    @property
    def paused(self) -> bool:
        return self._paused

    def push(self, item: T, enqueued_at: float | None = None) -> None:
        """
        Queue C{item} for delivery; C{max_age} counts from C{enqueued_at} (default now:
        give the original time for an item restored from the outbox). Raises
        L{QueueFull} or L{QueueClosed} if the item was not taken.
        """
        if not self._accepting:
            raise QueueClosed(f"replay queue {self.name} takes no new items")
        if len(self._entries) >= self._max_length:
            raise QueueFull(f"replay queue {self.name} is full ({self._max_length} items)")
        self._pushed += 1
        when = self._clock.seconds() if enqueued_at is None else enqueued_at
        self._entries.append(_Entry(item, when, self._pushed))
        self._wake()

    def pause(self) -> None:
        """Start no attempt until C{resume}; one in flight completes, a back-off stops counting."""
        self._paused = True
        self._cancel_call()

    def resume(self) -> None:
        """Attempt again, a back-off under way waiting out only what remains of it."""
        self._paused = False
        self._wake()

    def drain(self) -> Deferred[None]:
        """
        Take no new items, resume if paused, and fire once every item is delivered or
        dead-lettered (at once if none is left). Cancelling the Deferred stops only the wait.
        """
        self._accepting = False
        if not self._entries:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._drain_waiters.remove)
        self._drain_waiters.append(waiter)
        self.resume()
        return waiter

    def stop(self) -> list[T]:
        """
        Take no new items and attempt no more; give back the items not delivered, oldest
        first, for the caller to log or keep. The one in flight is among them: its
        attempt is left to finish, but its result is ignored. Waiting C{drain}s are
        cancelled.
        """
        self._accepting = False
        self._stopped = True
        self._cancel_call()
        left = [entry.item for entry in self._entries]
        self._entries.clear()
        for waiter in list(self._drain_waiters):
            waiter.cancel()
        return left

    def on_delivered(self, observer: Callable[[T], object]) -> None:
        """Call C{observer(item)} when an item is delivered."""
        self._delivered_observers.append(observer)

    def on_dead_letter(self, observer: Callable[[T, str], object]) -> None:
        """Call C{observer(item, reason)} when an item is given up on."""
        self._dead_letter_observers.append(observer)

    def on_drained(self, observer: Callable[[], object]) -> None:
        """Call C{observer()} whenever the last item is delivered or dead-lettered."""
        self._drained_observers.append(observer)

    def _wake(self) -> None:
        """Schedule the head's attempt, unless one is scheduled or running, or may not run."""
        if (self._paused or self._stopped or not self._entries or self._call is not None
                or self._attempting):
            return
        delay = max(0.0, self._entries[0].not_before - self._clock.seconds())
        self._call = self._clock.callLater(delay, self._attempt)

    def _cancel_call(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _attempt(self) -> None:
        self._call = None
        entry = self._entries[0]
        if self._clock.seconds() - entry.enqueued_at > self._max_age:
            self._dead_letter(entry, f"older than {self._max_age:g} s")
            return
        entry.attempts += 1
        self._attempting = True
        maybeDeferred(self._task, entry.item).addBoth(self._settled, entry)

    def _settled(self, result: object, entry: _Entry[T]) -> None:
        self._attempting = False
        if self._stopped:
            return
        if not isinstance(result, Failure):
            self.delivered += 1
            self._done(self._delivered_observers, entry.item)
            return
        error = _error(result)
        if result.check(PermanentFailure):
            self._dead_letter(entry, f"permanent failure: {error}")
            return
        if entry.attempts >= self._max_attempts:
            self._dead_letter(entry, f"{entry.attempts} attempts failed, the last with {error}")
            return
        delay = self._backoff.delay(entry.attempts, self._random)
        entry.not_before = self._clock.seconds() + delay
        if entry.not_before - entry.enqueued_at > self._max_age:
            self._dead_letter(entry, f"would be older than {self._max_age:g} s at its next"
                                     f" attempt; the last failed with {error}")
            return
        self.retries += 1
        self.log.debug("replay queue {queue}: {item} failed ({error}), attempt {attempt}"
                       " in {delay:.1f} s", queue=self.name, item=self._label(entry),
                       error=error, attempt=entry.attempts + 1, delay=delay)
        self._wake()

    def _dead_letter(self, entry: _Entry[T], reason: str) -> None:
        self.dead_letters += 1
        self.log.warn("replay queue {queue}: gave up on {item}: {reason}",
                      queue=self.name, item=self._label(entry), reason=reason)
        self._done(self._dead_letter_observers, entry.item, reason)

    def _done(self, observers: Sequence[Callable[..., object]], *args: object) -> None:
        """Drop the finished head, tell C{observers}, then go on or report the queue drained."""
        self._entries.popleft()
        self._notify(observers, *args)
        if self._stopped:  # by an observer
            return
        if self._entries:
            self._wake()
            return
        self._notify(self._drained_observers)
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _notify(self, observers: Sequence[Callable[..., object]], *args: object) -> None:
        for observer in list(observers):
            try:
                observer(*args)
            except Exception:
                self.log.failure("replay queue {queue}: observer {observer!r} failed",
                                 queue=self.name, observer=observer)

    def _label(self, entry: _Entry[T]) -> str:
        return self._describe(entry.item) if self._describe else f"item #{entry.number}"


def _error(failure: Failure) -> str:
    """C{"ValueError: message"}, for the log and dead-letter reasons."""
    message = failure.getErrorMessage()
    name = type(failure.value).__name__
    return f"{name}: {message}" if message else name
