"""
The chat core's background writes (a room's peak of people online, announcing a
changed message) while the database is away: a warning, not a traceback logged as a
critical failure (the PostgreSQL restart drill found that one).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import ImmediateReactor, in_thread_now, open_store
from tmd.chat import Chat
from tmd.errors import Unavailable
from tmd.hub import Hub
from tmd.store import IStore


class AwayStore:
    """The real store, except that keeping a room's peak finds the database away."""

    def __init__(self, store: IStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def raise_peak(self, room_id: int, online: int) -> Deferred[None]:
        return fail(Unavailable("The database is unavailable: try again in a moment."))


class PeakTests(SynchronousTestCase):
    def test_peak_while_away(self) -> None:
        """A peak not kept because the database is away is one warning, with no traceback."""
        clock = ImmediateReactor()
        store = AwayStore(open_store(self, reactor=clock))
        hub = Hub(clock)
        Chat(store, hub, clock, in_thread_now)  # type: ignore[arg-type]
        with capturedLogs() as logged:
            hub.on_online(1, 3)
        [event] = [e for e in logged if e.get("log_namespace") == "tmd.chat.Chat"]
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertNotIn("log_failure", event)
        self.assertEqual(formatEvent(event), "keeping the peak failed: The database is"
                                             " unavailable: try again in a moment.")
