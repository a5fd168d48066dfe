"""
Thread-less stand-ins and small shortcuts shared by the test modules.

tmd runs SQLite calls and password hashing in threads. Tests inject these instead
(STYLE.md section 6: a threadless pool, not monkeypatches), so every Deferred fires
before the call that made it returns and C{successResultOf} sees the result.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tmd.store.sqlite import SQLiteStore

T = TypeVar("T")
Awaitable = Coroutine[Any, Any, T] | Generator[Any, Any, T] | Deferred[T]


class ImmediatePool:
    """
    A Twisted C{ThreadPool} without threads: work runs at once, on the calling thread.

    It has what C{deferToThreadPool} and L{SQLiteStore} use: C{start}, C{stop} and
    C{callInThreadWithCallback}. Like a real pool after C{stop()}, it refuses work
    then (a real one raises C{AlreadyQuit}), so use after close shows up in tests.
    """

    def __init__(self) -> None:
        self.started = False
        self.stopped = False
        self.calls = 0
        """How many functions it has run."""

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], object],
                                 func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        """Run C{func} now; hand C{onResult} C{(True, result)} or C{(False, Failure())}."""
        if self.stopped:
            raise RuntimeError("ImmediatePool: work given after stop()")
        self.calls += 1
        try:
            result = func(*args, **kw)
        except BaseException:  # like ThreadPool: every error goes to onResult
            onResult(False, Failure())
        else:
            onResult(True, result)


@implementer(IReactorFromThreads)
class ImmediateReactor(Clock):
    """
    A L{Clock} that is also enough of a reactor for C{deferToThreadPool}:
    C{callFromThread} calls at once, C{getThreadPool} gives an L{ImmediatePool}.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pool = ImmediatePool()

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        callable(*args, **kwargs)

    def getThreadPool(self) -> ImmediatePool:
        return self._pool


def in_thread_now(f: Callable[..., T], *args: Any, **kw: Any) -> Deferred[T]:
    """
    The C{in_thread} argument of L{tmd.chat.Chat} for tests: run C{f} now and
    return a fired Deferred (its result, or the failure it raised).
    """
    return maybeDeferred(f, *args, **kw)


def database_path(test_case: SynchronousTestCase) -> str:
    """A path for a new SQLite file, in a fresh directory of C{test_case}'s own."""
    directory = test_case.mktemp()
    os.makedirs(directory)
    return os.path.join(directory, "tmd.sqlite3")


def open_store(test_case: SynchronousTestCase, path: str | None = None,
               reactor: IReactorFromThreads | None = None) -> SQLiteStore:
    """
    An open L{SQLiteStore} on C{path} (default: a new file), migrated and running
    on an L{ImmediatePool}; it is closed when the test ends.
    """
    store = SQLiteStore(path if path is not None else database_path(test_case),
                        reactor if reactor is not None else ImmediateReactor(),
                        pool=ImmediatePool())
    test_case.successResultOf(store.open())
    test_case.addCleanup(lambda: test_case.successResultOf(store.close()))
    return store


async def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """
    Wait, on the real reactor, until C{predicate()} is true: for what only real I/O
    makes happen (a server dropping a connection, say). Fails after C{timeout} seconds.
    """
    from twisted.internet import reactor

    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while not predicate():
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            raise AssertionError(f"still not true after {timeout} s: {predicate}")
        await deferLater(reactor, 0.01)  # type: ignore[arg-type]


def resolve(test_case: SynchronousTestCase, awaitable: Awaitable[T]) -> T:
    """The result of a Deferred or a coroutine that has already finished; fails the test if not."""
    return test_case.successResultOf(awaitable)


def reject(test_case: SynchronousTestCase, awaitable: Awaitable[Any],
           *expected: type[BaseException]) -> Failure:
    """
    The failure of a Deferred or coroutine that has already failed with one of
    C{expected}; fails the test if it succeeded, is pending or failed otherwise.
    """
    return test_case.failureResultOf(awaitable, *expected)
