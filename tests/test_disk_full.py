"""
The SQLite store when its disk is full: a write is refused with a 503 that says why,
reads go on, and writing resumes by itself once there is room.

The disk is "full" here through C{PRAGMA max_page_count} on the store's own
connection (SQLite answers SQLITE_FULL exactly as for a full filesystem); the
end-to-end drill on a real, tiny filesystem is in L{tests.integration.test_faults}.
"""

from __future__ import annotations

import sqlite3

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import open_store, reject, resolve
from tests.test_store import chat, new_room
from tmd.errors import Unavailable
from tmd.store.sqlite import FULL_LOG_EVERY, FULL_RETRY_AFTER, SQLiteStore


def cap_pages(store: SQLiteStore, extra: int | None) -> None:
    """
    Let the database grow by C{extra} pages at most (None: no cap). Test-only: the
    pragma is per connection, and only the store holds its connection.
    """
    db = store._db
    assert isinstance(db, sqlite3.Connection)
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    limit = pages + extra if extra is not None else 1_073_741_823
    db.execute(f"PRAGMA max_page_count = {limit}")


class DiskFullTests(SynchronousTestCase):
    def test_post_refused_then_resumes(self) -> None:
        """
        With no room left, a post fails with L{Unavailable} (a 503 C{unavailable} with
        Retry-After) saying the disk is full, not with SQLite's error (which the
        rollback used to hide behind "cannot rollback"); nothing is half-written, reads
        work, and once there is room the next post gets the next seq, with no gap.
        """
        store = open_store(self)
        room = resolve(self, store.create_room(new_room()))
        self.assertEqual(resolve(self, store.post(room, chat("before"))).seq, 1)
        cap_pages(store, 0)

        with capturedLogs() as logged:
            for _ in range(3):
                error = reject(self, store.post(room, chat("x" * 5000)), Unavailable).value
        assert isinstance(error, Unavailable)
        self.assertEqual((error.code, error.retry_after), ("unavailable", FULL_RETRY_AFTER))
        self.assertIn("disk is full", error.message)
        warnings = [e for e in logged if "disk is full" in e["log_format"]]
        self.assertEqual(len(warnings), 1, "one warning, not one per refused write")
        self.assertEqual(warnings[0]["count"], 1)
        self.assertLess(3, FULL_LOG_EVERY)

        messages, last_seq = resolve(self, store.messages(room, 0, 100))
        self.assertEqual(([m.body for m in messages], last_seq), (["before"], 1))
        self.assertIsNotNone(resolve(self, store.room(room.name)))

        cap_pages(store, None)
        self.assertEqual(resolve(self, store.post(room, chat("after"))).seq, 2)
        messages, last_seq = resolve(self, store.messages(room, 0, 100))
        self.assertEqual(([m.seq for m in messages], last_seq), ([1, 2], 2))

    def test_other_errors_unchanged(self) -> None:
        """Only SQLITE_FULL becomes L{Unavailable}: other database errors stay what they are."""
        store = open_store(self)
        failure = reject(self, store._run(lambda db: db.execute("SELECT * FROM nowhere")),
                         sqlite3.OperationalError)
        self.assertIn("no such table", str(failure.value))
