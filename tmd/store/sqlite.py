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
    Held,
    Message,
    NewMessage,
    NewRoom,
    Participant,
    ParticipantStats,
    Restricted,
    Room,
    RoomChanges,
    RoomStats,
    nickname_key,
)
from tmd.store.interface import IStore
from tmd.store.migrations import migrations
from tmd.store.stats import participant_stats, room_stats

T = TypeVar("T")

_ROOM_COLUMNS = (
    "id, name, title, state, created_at, expires_at, max_length, password_hash,"
    " owner_token_hash, hashtags, last_seq, qa, moderation, locked, host_name, pinned_seq,"
    " restricted, peak_online"
)
_ROOM_WITH_PARTICIPANT = (
    "SELECT " + ", ".join(f"r.{column.strip()}" for column in _ROOM_COLUMNS.split(","))
    + ", p.id AS participant_id, p.nickname AS participant_nickname,"
    " p.muted AS participant_muted FROM rooms r"
    " LEFT JOIN participants p ON p.room_id = r.id AND p.token_hash = ? WHERE r.name = ?"
)
_MESSAGE_COLUMNS = ("seq, kind, author, body, created_at, source, participant_id, question, votes,"
                    " answered, host, edited")
_PARTICIPANT_STATS = participant_stats(":room")
_ROOM_STATS = room_stats(":room")
_HELD_COLUMNS = "id, participant_id, author, body, question, created_at, reason, matched"
_DELIVERY_COLUMNS = "id, destination, created_at, method, path, content_type, event, body"
FULL_RETRY_AFTER = 30
"""Seconds a client is told to wait when the disk is full: freeing space takes a person."""
FULL_LOG_EVERY = 1000
"""While the disk is full, one warning for the first refused write and each this many after."""
KNOWN_LIMIT = 10_000
"""The most participants a store keeps in memory for posts; past it, it starts over."""


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
        qa=bool(row["qa"]), moderation=row["moderation"], locked=bool(row["locked"]),
        host_name=row["host_name"], pinned=row["pinned_seq"],
        restricted=Restricted.from_json(json.loads(row["restricted"])),
        peak_online=row["peak_online"],
    )


def _message(room_name: str, row: sqlite3.Row, pinned: int | None = None) -> Message:
    source = row["source"]
    return Message(
        seq=row["seq"], room=room_name, kind=row["kind"], author=row["author"],
        body=row["body"], created_at=row["created_at"],
        source=json.loads(source) if source is not None else None,
        participant_id=row["participant_id"], question=bool(row["question"]),
        votes=row["votes"], answered=bool(row["answered"]), pinned=row["seq"] == pinned,
        host=bool(row["host"]), edited=bool(row["edited"]),
    )


def _held(room: Room, row: sqlite3.Row) -> Held:
    return Held(
        id=row["id"], room_id=room.id, room=room.name, participant_id=row["participant_id"],
        author=row["author"], body=row["body"], question=bool(row["question"]),
        created_at=row["created_at"], reason=row["reason"],
        matched=tuple(json.loads(row["matched"])),
    )


def _insert_message(db: sqlite3.Connection, room: Room, new: NewMessage,
                    outbox: Sequence[Delivery]) -> Message:
    """Give C{new} the room's next seq and insert it, inside the caller's transaction."""
    row = db.execute(
        "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
        (room.id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"There is no room '{room.name}'.")
    seq = row[0]
    db.execute(
        "INSERT INTO messages (room_id, seq, kind, author, participant_id, body,"
        " created_at, source, question, host, edited) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (room.id, seq, new.kind, new.author, new.participant_id, new.body,
         new.created_at, json.dumps(new.source) if new.source is not None else None,
         int(new.question), int(new.host), int(new.edited)),
    )
    _add_outbox(db, [delivery.with_seq(seq) for delivery in outbox])
    return Message(seq=seq, room=room.name, kind=new.kind, author=new.author,
                   body=new.body, created_at=new.created_at, source=new.source,
                   participant_id=new.participant_id, question=new.question, host=new.host,
                   edited=new.edited)


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
        # What posts look up (room_with_participant), kept so that most posts make one trip
        # to the SQLite thread, not two. This store is the only writer of its file, so
        # every change is made here: each write of a room's settings or of a participant
        # forgets it all, in the SQLite thread, in the job of the write. Lookups fill it
        # in that thread too, so one that read before a write can never refill it after.
        # The reactor only reads it. last_seq and peak_online are left to age (posts do not
        # read them, and they change with every post).
        self._known_rooms: dict[str, Room] = {}
        self._known_participants: dict[bytes, Participant] = {}

    def _run(self, work: Callable[[sqlite3.Connection], T], forgets: bool = False,
             ) -> Deferred[T]:
        """C{work} in the SQLite thread; C{forgets}: it changes rooms or participants."""
        def in_thread() -> T:
            assert self._db is not None, "the store is not open"
            try:
                return work(self._db)
            finally:
                if forgets:
                    self._known_rooms.clear()
                    self._known_participants.clear()

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

        d: Deferred[None] = (self._run(shut, forgets=True) if self._db is not None
                             else succeed(None))

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
                        " password_hash, hashtags, owner_token_hash, qa, moderation, host_name)"
                        f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_ROOM_COLUMNS}",
                        (new.name, new.title, new.created_at, new.expires_at, new.max_length,
                         new.password_hash, json.dumps(list(new.hashtags)), new.owner_token_hash,
                         int(new.qa), new.moderation, new.host_name),
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

    def room_with_participant(self, name: str, token_hash: bytes,
                              ) -> Deferred[tuple[Room, Participant | None] | None]:
        room = self._known_rooms.get(name)
        participant = self._known_participants.get(token_hash)
        if room is not None and participant is not None and participant.room_id == room.id:
            return succeed((room, participant))

        def select(db: sqlite3.Connection) -> tuple[Room, Participant | None] | None:
            row = db.execute(_ROOM_WITH_PARTICIPANT, (token_hash, name)).fetchone()
            if row is None:
                return None
            room = _room(row)
            if row["participant_id"] is None:
                return room, None
            participant = Participant(id=row["participant_id"], room_id=room.id,
                                      nickname=row["participant_nickname"],
                                      muted=bool(row["participant_muted"]))
            if len(self._known_participants) >= KNOWN_LIMIT:
                self._known_rooms.clear()
                self._known_participants.clear()
            self._known_rooms[name] = room
            self._known_participants[token_hash] = participant
            return room, participant

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

        return self._run(update, forgets=True)

    def post(self, room: Room, new: NewMessage,
             outbox: Sequence[Delivery] = ()) -> Deferred[Message]:
        def insert(db: sqlite3.Connection) -> Message:
            with _transaction(db):
                return _insert_message(db, room, new, outbox)

        return self._run(insert)

    def update_room(self, room: Room, changed: RoomChanges,
                    outbox: Sequence[Delivery] = ()) -> Deferred[Room | None]:
        def update(db: sqlite3.Connection) -> Room | None:
            with _transaction(db):
                row = db.execute(
                    "UPDATE rooms SET state = ?, title = ?, hashtags = ?, expires_at = ?, qa = ?,"
                    " moderation = ?, locked = ?, host_name = ?"
                    f" WHERE id = ? RETURNING {_ROOM_COLUMNS}",
                    (changed.state, changed.title, json.dumps(list(changed.hashtags)),
                     changed.expires_at, int(changed.qa), changed.moderation, int(changed.locked),
                     changed.host_name, room.id),
                ).fetchone()
                if row is None:
                    return None
                _add_outbox(db, outbox)
            return _room(row)

        return self._run(update, forgets=True)

    def delete_room(self, room: Room, outbox: Sequence[Delivery] = ()) -> Deferred[bool]:
        def delete(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                if not db.execute("DELETE FROM rooms WHERE id = ?", (room.id,)).rowcount:
                    return False
                _add_outbox(db, outbox)
            return True

        return self._run(delete, forgets=True)

    def close_expired(self, now_ms: int, limit: int) -> Deferred[list[Room]]:
        def close(db: sqlite3.Connection) -> list[Room]:
            with _transaction(db):
                rows = db.execute(
                    "UPDATE rooms SET state = 'closed' WHERE id IN (SELECT id FROM rooms"
                    " WHERE expires_at <= ? AND state <> 'closed' ORDER BY expires_at LIMIT ?)"
                    f" RETURNING {_ROOM_COLUMNS}", (now_ms, limit)).fetchall()
            return [_room(row) for row in rows]

        return self._run(close, forgets=True)

    def purge_expired(self, before_ms: int, limit: int) -> Deferred[list[Room]]:
        def purge(db: sqlite3.Connection) -> list[Room]:
            with _transaction(db):
                rows = db.execute(
                    "DELETE FROM rooms WHERE id IN (SELECT id FROM rooms"
                    " WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)"
                    f" RETURNING {_ROOM_COLUMNS}", (before_ms, limit)).fetchall()
            return [_room(row) for row in rows]

        return self._run(purge, forgets=True)

    def delete_message(self, room: Room, seq: int,
                       outbox: Sequence[Delivery] = ()) -> Deferred[bool]:
        def delete(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                deleted = db.execute(
                    "UPDATE messages SET deleted = 1 WHERE room_id = ? AND seq = ? AND NOT deleted",
                    (room.id, seq)).rowcount
                if not deleted:
                    return False
                db.execute("UPDATE rooms SET pinned_seq = NULL WHERE id = ? AND pinned_seq = ?",
                           (room.id, seq))
                _add_outbox(db, outbox)
            return True

        return self._run(delete, forgets=True)  # it may unpin

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
                row = db.execute("SELECT last_seq, pinned_seq FROM rooms WHERE id = ?",
                                 (room.id,)).fetchone()
                if row is None:
                    raise NotFound(f"There is no room '{room.name}'.")
                rows = db.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages"
                    " WHERE room_id = ? AND seq > ? AND NOT deleted ORDER BY seq LIMIT ?",
                    (room.id, after, limit),
                ).fetchall()
            return [_message(room.name, r, row[1]) for r in rows], row[0]

        return self._run(select)

    def message(self, room_id: int, seq: int) -> Deferred[Message | None]:
        def select(db: sqlite3.Connection) -> Message | None:
            row = db.execute(
                f"SELECT r.name, r.pinned_seq, {_qualified('m', _MESSAGE_COLUMNS)}"
                " FROM messages m JOIN rooms r ON r.id = m.room_id"
                " WHERE m.room_id = ? AND m.seq = ? AND NOT m.deleted", (room_id, seq)).fetchone()
            return _message(row["name"], row, row["pinned_seq"]) if row is not None else None

        return self._run(select)

    def announce_change(self, room: Room, seq: int) -> Deferred[Message | None]:
        return self.message(room.id, seq)  # one daemon: no one else to tell

    def vote(self, room: Room, seq: int, participant_id: str, on: bool,
             now_ms: int) -> Deferred[int | None]:
        def write(db: sqlite3.Connection) -> int | None:
            with _transaction(db):
                row = db.execute(
                    "SELECT votes FROM messages WHERE room_id = ? AND seq = ? AND question"
                    " AND NOT deleted", (room.id, seq)).fetchone()
                if row is None:
                    return None
                if on:
                    changed = db.execute(
                        "INSERT INTO votes (room_id, seq, participant_id, created_at)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (room.id, seq, participant_id, now_ms)).rowcount
                else:
                    changed = -db.execute(
                        "DELETE FROM votes WHERE room_id = ? AND seq = ? AND participant_id = ?",
                        (room.id, seq, participant_id)).rowcount
                if not changed:
                    return int(row[0])
                return int(db.execute(
                    "UPDATE messages SET votes = votes + ? WHERE room_id = ? AND seq = ?"
                    " RETURNING votes", (changed, room.id, seq)).fetchone()[0])

        return self._run(write)

    def voted(self, room: Room, participant_id: str) -> Deferred[list[int]]:
        def select(db: sqlite3.Connection) -> list[int]:
            rows = db.execute(
                "SELECT v.seq FROM votes v JOIN messages m ON m.room_id = v.room_id"
                " AND m.seq = v.seq WHERE v.room_id = ? AND v.participant_id = ?"
                " AND NOT m.deleted ORDER BY v.seq", (room.id, participant_id)).fetchall()
            return [seq for (seq,) in rows]

        return self._run(select)

    def set_answered(self, room: Room, seq: int, answered: bool) -> Deferred[bool]:
        def update(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                return db.execute(
                    "UPDATE messages SET answered = ? WHERE room_id = ? AND seq = ? AND question"
                    " AND NOT deleted", (int(answered), room.id, seq)).rowcount > 0

        return self._run(update)

    def pin(self, room: Room, seq: int | None) -> Deferred[tuple[Room, int | None] | None]:
        def update(db: sqlite3.Connection) -> tuple[Room, int | None] | None:
            with _transaction(db):
                before = db.execute("SELECT pinned_seq FROM rooms WHERE id = ?",
                                    (room.id,)).fetchone()
                if before is None:
                    return None
                row = db.execute(f"UPDATE rooms SET pinned_seq = ? WHERE id = ?"
                                 f" RETURNING {_ROOM_COLUMNS}", (seq, room.id)).fetchone()
            return _room(row), before[0]

        return self._run(update, forgets=True)

    def set_restricted(self, room: Room, restricted: Restricted) -> Deferred[Room | None]:
        def update(db: sqlite3.Connection) -> Room | None:
            with _transaction(db):
                row = db.execute(
                    f"UPDATE rooms SET restricted = ? WHERE id = ? RETURNING {_ROOM_COLUMNS}",
                    (json.dumps(restricted.to_json()), room.id)).fetchone()
            return _room(row) if row is not None else None

        return self._run(update, forgets=True)

    def questions(self, room: Room, top: bool,
                  limit: int) -> Deferred[tuple[list[Message], int]]:
        order = "votes DESC, seq" if top else "seq DESC"

        def select(db: sqlite3.Connection) -> tuple[list[Message], int]:
            with _transaction(db, "BEGIN"):
                row = db.execute("SELECT last_seq, pinned_seq FROM rooms WHERE id = ?",
                                 (room.id,)).fetchone()
                if row is None:
                    raise NotFound(f"There is no room '{room.name}'.")
                rows = db.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room_id = ? AND question"
                    f" AND NOT deleted ORDER BY {order} LIMIT ?", (room.id, limit)).fetchall()
            return [_message(room.name, r, row[1]) for r in rows], row[0]

        return self._run(select)

    def hold(self, held: Held) -> Deferred[None]:
        def insert(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(
                    f"INSERT INTO held (room_id, {_HELD_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (held.room_id, held.id, held.participant_id, held.author, held.body,
                     int(held.question), held.created_at, held.reason,
                     json.dumps(list(held.matched))))

        return self._run(insert)

    def held_posts(self, room: Room, participant_id: str | None) -> Deferred[list[Held]]:
        def select(db: sqlite3.Connection) -> list[Held]:
            rows = db.execute(
                f"SELECT {_HELD_COLUMNS} FROM held WHERE room_id = ?"
                " AND (? IS NULL OR participant_id = ?) ORDER BY created_at, rowid",
                (room.id, participant_id, participant_id)).fetchall()
            return [_held(room, row) for row in rows]

        return self._run(select)

    def held_post(self, room: Room, held_id: str) -> Deferred[Held | None]:
        def select(db: sqlite3.Connection) -> Held | None:
            row = db.execute(f"SELECT {_HELD_COLUMNS} FROM held WHERE room_id = ? AND id = ?",
                             (room.id, held_id)).fetchone()
            return _held(room, row) if row is not None else None

        return self._run(select)

    def approve(self, room: Room, held_id: str, new: NewMessage,
                outbox: Sequence[Delivery] = ()) -> Deferred[Message | None]:
        def move(db: sqlite3.Connection) -> Message | None:
            with _transaction(db):
                if not db.execute("DELETE FROM held WHERE room_id = ? AND id = ?",
                                  (room.id, held_id)).rowcount:
                    return None
                return _insert_message(db, room, new, outbox)

        return self._run(move)

    def reject(self, room: Room, held_id: str) -> Deferred[Held | None]:
        def delete(db: sqlite3.Connection) -> Held | None:
            with _transaction(db):
                row = db.execute(f"DELETE FROM held WHERE room_id = ? AND id = ?"
                                 f" RETURNING {_HELD_COLUMNS}", (room.id, held_id)).fetchone()
            return _held(room, row) if row is not None else None

        return self._run(delete)

    def stats(self, room: Room) -> Deferred[RoomStats]:
        def select(db: sqlite3.Connection) -> RoomStats:
            with _transaction(db, "BEGIN"):
                people = db.execute(_PARTICIPANT_STATS, {"room": room.id}).fetchall()
                totals = db.execute(_ROOM_STATS, {"room": room.id}).fetchone()
            if totals is None:
                raise NotFound(f"There is no room '{room.name}'.")
            return RoomStats(
                participants=tuple(ParticipantStats(*row) for row in people),
                messages=totals[0], questions=totals[1], host_messages=totals[2],
                votes=totals[3], held=totals[4], peak_online=totals[5])

        return self._run(select)

    def raise_peak(self, room_id: int, online: int) -> Deferred[None]:
        def update(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute("UPDATE rooms SET peak_online = ? WHERE id = ? AND peak_online < ?",
                           (online, room_id, online))

        return self._run(update)

    def add_outbox(self, deliveries: Sequence[Delivery]) -> Deferred[None]:
        if not deliveries:
            return succeed(None)

        def insert(db: sqlite3.Connection) -> None:
            with _transaction(db):
                _add_outbox(db, deliveries)

        return self._run(insert)

    def pending_deliveries(self, limit: int, destination: str | None = None,
                           ) -> Deferred[list[Delivery]]:
        def select(db: sqlite3.Connection) -> list[Delivery]:
            rows = db.execute(f"SELECT {_DELIVERY_COLUMNS} FROM outbox WHERE NOT dead"
                              " AND coalesce(destination = ?, true) ORDER BY position LIMIT ?",
                              (destination, limit)).fetchall()
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


def _qualified(table: str, columns: str) -> str:
    return ", ".join(f"{table}.{column.strip()}" for column in columns.split(","))


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
