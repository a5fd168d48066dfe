"""
The embedded SQLite engine: runs anywhere with no setup.

Every call runs in a thread pool of one thread, owning the one connection: SQLite
has a single writer anyway, and one thread delivers results to the reactor in
commit order, so the Hub publishes messages in seq order. WAL lets other
processes (backups, the sqlite3 shell) read while we write.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from tmd.errors import NameTaken, NotFound, Unavailable
from tmd.model import (
    Delivery,
    Message,
    NewMessage,
    NewRoom,
    Participant,
    Room,
    RoomChanges,
    nickname_key,
)
from tmd.store.interface import IStore
from tmd.store.migrations import migrations

T = TypeVar("T")

_ROOM_COLUMNS = (
    "id, name, title, state, created_at, expires_at, max_length, password_hash,"
    " owner_token_hash, hashtags, last_seq"
)
_MESSAGE_COLUMNS = "seq, kind, author, body, created_at, source, participant_id"
_DELIVERY_COLUMNS = "id, destination, created_at, method, path, content_type, event, body"
FULL_RETRY_AFTER = 30
"""Seconds a client is told to wait when the disk is full: freeing space takes a person."""
FULL_LOG_EVERY = 1000
"""While the disk is full, one warning for the first refused write and each this many after."""


class Pool(Protocol):
    """What C{deferToThreadPool} needs of a thread pool, plus its lifecycle."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], object],
                                 func: Callable[..., Any], *args: Any, **kw: Any) -> None: ...


def _room(row: sqlite3.Row) -> Room:
    return Room(
        id=row["id"], name=row["name"], title=row["title"], state=row["state"],
        created_at=row["created_at"], expires_at=row["expires_at"],
        max_length=row["max_length"], password_hash=row["password_hash"],
        owner_token_hash=row["owner_token_hash"],
        hashtags=tuple(json.loads(row["hashtags"])), last_seq=row["last_seq"],
    )


def _message(room_name: str, row: sqlite3.Row) -> Message:
    source = row["source"]
    return Message(
        seq=row["seq"], room=room_name, kind=row["kind"], author=row["author"],
        body=row["body"], created_at=row["created_at"],
        source=json.loads(source) if source is not None else None,
        participant_id=row["participant_id"],
    )


@implementer(IStore)
class SQLiteStore:
    """L{IStore} on one SQLite file."""

    log = Logger()

    def __init__(self, path: str, reactor: IReactorFromThreads, pool: Pool | None = None) -> None:
        self._path = path
        self._reactor = reactor
        self._pool: Pool = pool if pool is not None else ThreadPool(1, 1, "tmd-sqlite")
        self._db: sqlite3.Connection | None = None
        self._refused_full = 0

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        def in_thread() -> T:
            assert self._db is not None, "the store is not open"
            return work(self._db)

        d = deferToThreadPool(self._reactor, self._pool, in_thread)  # type: ignore[arg-type]
        return d.addErrback(self._disk_full)

    def _disk_full(self, failure: Failure) -> Failure:
        """
        A write refused for want of space (SQLite rolled it back) is a 503 that says
        why: reads go on, and writes work again by themselves once there is room.
        """
        error = failure.value
        if not (isinstance(error, sqlite3.OperationalError)
                and error.sqlite_errorcode == sqlite3.SQLITE_FULL):
            return failure
        if self._refused_full % FULL_LOG_EVERY == 0:
            self.log.warn("the database's disk is full ({path}): {count} writes refused so far;"
                          " free some space and writing resumes by itself",
                          path=self._path, count=self._refused_full + 1)
        self._refused_full += 1
        return Failure(Unavailable(
            "The server's disk is full: nothing can be written until space is freed. Reading"
            " still works.", retry_after=FULL_RETRY_AFTER))

    def open(self) -> Deferred[None]:
        self._pool.start()
        return deferToThreadPool(self._reactor, self._pool, self._connect)  # type: ignore[arg-type]

    def _connect(self) -> None:
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed (so acknowledged) message survives power loss, not just a crash.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 5000")
        self._migrate(db)
        self._db = db

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for migration in migrations("sqlite"):
            if migration.version > current:
                self.log.info("applying migration {version} {name}",
                              version=migration.version, name=migration.name)
                db.executescript(
                    f"BEGIN;\n{migration.sql}\n;"
                    f"INSERT INTO schema_version VALUES ({migration.version});\nCOMMIT;"
                )

    def close(self) -> Deferred[None]:
        def shut(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None

        d: Deferred[None] = self._run(shut) if self._db is not None else succeed(None)

        def stop_pool(result: object) -> object:
            self._pool.stop()
            return result

        return d.addBoth(stop_pool)

    def check(self) -> Deferred[None]:
        return self._run(lambda db: db.execute("SELECT 1").fetchone() and None)

    def create_room(self, new: NewRoom, outbox: Sequence[Delivery] = ()) -> Deferred[Room]:
        def insert(db: sqlite3.Connection) -> Room:
            try:
                with _transaction(db):
                    row = db.execute(
                        "INSERT INTO rooms (name, title, created_at, expires_at, max_length,"
                        " password_hash, hashtags, owner_token_hash)"
                        f" VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_ROOM_COLUMNS}",
                        (new.name, new.title, new.created_at, new.expires_at, new.max_length,
                         new.password_hash, json.dumps(list(new.hashtags)), new.owner_token_hash),
                    ).fetchone()
                    _add_outbox(db, outbox)
            except sqlite3.IntegrityError as e:
                if "rooms.name" not in str(e):
                    raise
                raise NameTaken(f"The room name '{new.name}' is taken.") from None
            return _room(row)

        return self._run(insert)

    def room(self, name: str) -> Deferred[Room | None]:
        def select(db: sqlite3.Connection) -> Room | None:
            query = f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE name = ?"
            row = db.execute(query, (name,)).fetchone()
            return _room(row) if row is not None else None

        return self._run(select)

    def add_participant(self, room_id: int, participant_id: str, nickname: str,
                        token_hash: bytes, now_ms: int) -> Deferred[Participant]:
        def insert(db: sqlite3.Connection) -> Participant:
            try:
                with _transaction(db):
                    db.execute(
                        "INSERT INTO participants (id, room_id, nickname, nickname_key,"
                        " token_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (participant_id, room_id, nickname, nickname_key(nickname), token_hash,
                         now_ms),
                    )
            except sqlite3.IntegrityError as e:
                if "nickname_key" not in str(e):
                    raise
                raise NameTaken(f"The nickname '{nickname}' is taken in this room.") from None
            return Participant(id=participant_id, room_id=room_id, nickname=nickname, muted=False)

        return self._run(insert)

    def participant(self, room_id: int, token_hash: bytes) -> Deferred[Participant | None]:
        def select(db: sqlite3.Connection) -> Participant | None:
            row = db.execute(
                "SELECT id, nickname, muted FROM participants WHERE token_hash = ? AND room_id = ?",
                (token_hash, room_id),
            ).fetchone()
            if row is None:
                return None
            return Participant(id=row["id"], room_id=room_id, nickname=row["nickname"],
                               muted=bool(row["muted"]))

        return self._run(select)

    def participants(self, room: Room) -> Deferred[list[Participant]]:
        def select(db: sqlite3.Connection) -> list[Participant]:
            rows = db.execute(
                "SELECT id, nickname, muted FROM participants WHERE room_id = ?"
                " ORDER BY created_at, rowid", (room.id,)).fetchall()
            return [Participant(id=r["id"], room_id=room.id, nickname=r["nickname"],
                                muted=bool(r["muted"])) for r in rows]

        return self._run(select)

    def set_muted(self, room: Room, participant_id: str, muted: bool) -> Deferred[bool]:
        def update(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                return db.execute(
                    "UPDATE participants SET muted = ? WHERE room_id = ? AND id = ?",
                    (int(muted), room.id, participant_id)).rowcount > 0

        return self._run(update)

    def post(self, room: Room, new: NewMessage,
             outbox: Sequence[Delivery] = ()) -> Deferred[Message]:
        def insert(db: sqlite3.Connection) -> Message:
            with _transaction(db):
                row = db.execute(
                    "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
                    (room.id,),
                ).fetchone()
                if row is None:
                    raise NotFound(f"There is no room '{room.name}'.")
                seq = row[0]
                db.execute(
                    "INSERT INTO messages (room_id, seq, kind, author, participant_id, body,"
                    " created_at, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (room.id, seq, new.kind, new.author, new.participant_id, new.body,
                     new.created_at, json.dumps(new.source) if new.source is not None else None),
                )
                _add_outbox(db, [delivery.with_seq(seq) for delivery in outbox])
            return Message(seq=seq, room=room.name, kind=new.kind, author=new.author,
                           body=new.body, created_at=new.created_at, source=new.source,
                           participant_id=new.participant_id)

        return self._run(insert)

    def update_room(self, room: Room, changed: RoomChanges,
                    outbox: Sequence[Delivery] = ()) -> Deferred[Room | None]:
        def update(db: sqlite3.Connection) -> Room | None:
            with _transaction(db):
                row = db.execute(
                    "UPDATE rooms SET state = ?, title = ?, hashtags = ?, expires_at = ?"
                    f" WHERE id = ? RETURNING {_ROOM_COLUMNS}",
                    (changed.state, changed.title, json.dumps(list(changed.hashtags)),
                     changed.expires_at, room.id),
                ).fetchone()
                if row is None:
                    return None
                _add_outbox(db, outbox)
            return _room(row)

        return self._run(update)

    def delete_room(self, room: Room, outbox: Sequence[Delivery] = ()) -> Deferred[bool]:
        def delete(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                if not db.execute("DELETE FROM rooms WHERE id = ?", (room.id,)).rowcount:
                    return False
                _add_outbox(db, outbox)
            return True

        return self._run(delete)

    def close_expired(self, now_ms: int, limit: int) -> Deferred[list[Room]]:
        def close(db: sqlite3.Connection) -> list[Room]:
            with _transaction(db):
                rows = db.execute(
                    "UPDATE rooms SET state = 'closed' WHERE id IN (SELECT id FROM rooms"
                    " WHERE expires_at <= ? AND state <> 'closed' ORDER BY expires_at LIMIT ?)"
                    f" RETURNING {_ROOM_COLUMNS}", (now_ms, limit)).fetchall()
            return [_room(row) for row in rows]

        return self._run(close)

    def purge_expired(self, before_ms: int, limit: int) -> Deferred[list[Room]]:
        def purge(db: sqlite3.Connection) -> list[Room]:
            with _transaction(db):
                rows = db.execute(
                    "DELETE FROM rooms WHERE id IN (SELECT id FROM rooms"
                    " WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)"
                    f" RETURNING {_ROOM_COLUMNS}", (before_ms, limit)).fetchall()
            return [_room(row) for row in rows]

        return self._run(purge)

    def delete_message(self, room: Room, seq: int,
                       outbox: Sequence[Delivery] = ()) -> Deferred[bool]:
        def delete(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                deleted = db.execute(
                    "UPDATE messages SET deleted = 1 WHERE room_id = ? AND seq = ? AND NOT deleted",
                    (room.id, seq)).rowcount
                if not deleted:
                    return False
                _add_outbox(db, outbox)
            return True

        return self._run(delete)

    def tagged_rooms(self, now_ms: int) -> Deferred[list[Room]]:
        def select(db: sqlite3.Connection) -> list[Room]:
            rows = db.execute(
                f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE state = 'open' AND expires_at > ?"
                " AND hashtags <> '[]' ORDER BY id", (now_ms,)).fetchall()
            return [_room(row) for row in rows]

        return self._run(select)

    def social_message(self, room: Room, network: str, source_id: str) -> Deferred[int | None]:
        def select(db: sqlite3.Connection) -> int | None:
            row = db.execute(
                "SELECT seq FROM messages WHERE room_id = ? AND kind = 'social' AND NOT deleted"
                " AND json_extract(source, '$.network') = ? AND json_extract(source, '$.id') = ?"
                " ORDER BY seq LIMIT 1", (room.id, network, source_id)).fetchone()
            return row[0] if row is not None else None

        return self._run(select)

    def messages(self, room: Room, after: int, limit: int) -> Deferred[tuple[list[Message], int]]:
        def select(db: sqlite3.Connection) -> tuple[list[Message], int]:
            with _transaction(db, "BEGIN"):
                row = db.execute("SELECT last_seq FROM rooms WHERE id = ?", (room.id,)).fetchone()
                if row is None:
                    raise NotFound(f"There is no room '{room.name}'.")
                rows = db.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages"
                    " WHERE room_id = ? AND seq > ? AND NOT deleted ORDER BY seq LIMIT ?",
                    (room.id, after, limit),
                ).fetchall()
            return [_message(room.name, r) for r in rows], row[0]

        return self._run(select)

    def add_outbox(self, deliveries: Sequence[Delivery]) -> Deferred[None]:
        if not deliveries:
            return succeed(None)

        def insert(db: sqlite3.Connection) -> None:
            with _transaction(db):
                _add_outbox(db, deliveries)

        return self._run(insert)

    def pending_deliveries(self, limit: int) -> Deferred[list[Delivery]]:
        def select(db: sqlite3.Connection) -> list[Delivery]:
            rows = db.execute(f"SELECT {_DELIVERY_COLUMNS} FROM outbox WHERE NOT dead"
                              " ORDER BY position LIMIT ?", (limit,)).fetchall()
            return [Delivery(*row) for row in rows]

        return self._run(select)

    def delivered(self, delivery: Delivery) -> Deferred[None]:
        def delete(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute("DELETE FROM outbox WHERE id = ? AND destination = ?",
                           (delivery.id, delivery.destination))

        return self._run(delete)

    def dead_letter(self, delivery: Delivery) -> Deferred[None]:
        def update(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute("UPDATE outbox SET dead = 1 WHERE id = ? AND destination = ?",
                           (delivery.id, delivery.destination))

        return self._run(update)


def _add_outbox(db: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
    """Insert C{deliveries} in order, inside the caller's transaction."""
    if deliveries:
        db.executemany(
            f"INSERT INTO outbox ({_DELIVERY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id, destination) DO NOTHING",
            [(d.id, d.destination, d.created_at, d.method, d.path, d.content_type, d.event,
              d.body) for d in deliveries])


@contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """One explicit transaction: IMMEDIATE takes the write lock up front."""
    db.execute(begin)
    try:
        yield
    except BaseException:
        if db.in_transaction:  # some errors (SQLITE_FULL) roll back by themselves
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
