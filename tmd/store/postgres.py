"""
The PostgreSQL engine, for production: several daemons share one database.

It talks to PostgreSQL through txpostgres (psycopg2's asynchronous mode), so no
query ever blocks the reactor and no thread is needed. Each write is a single
statement, so each is its own transaction in one round trip. A post takes the
room's row lock to allocate its seq: concurrent posters on every daemon are
serialised on that row until commit, so seqs are gap-free, unique and committed
in order. The post's NOTIFY is sent by the same statement, so PostgreSQL
delivers it to every listening daemon after the commit, and only then.

Every connection is a L{Link} that notices when it is lost and reconnects by
itself with capped, jittered back-off. While none is up, calls fail at once with
L{Unavailable} (a 503) instead of waiting.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Coroutine, Iterator, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import psycopg2
import psycopg2.errors
from psycopg2.extensions import parse_dsn
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    FirstError,
    TimeoutError,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.main import CONNECTION_LOST
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres.txpostgres import Connection, Cursor
from zope.interface import implementer

from tmd import bus, tokens
from tmd.errors import NameTaken, NotFound, Unavailable
from tmd.model import (
    SEQ_PLACEHOLDER,
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
from tmd.store.migrations import Migration, migrations
from tmd.store.stats import participant_stats, room_stats

T = TypeVar("T")
P = ParamSpec("P")

CONNECT_TIMEOUT = 5.0
"""Seconds a connection attempt may take (libpq ignores connect_timeout in async mode)."""

QUERY_TIMEOUT = 10.0
"""Seconds a call may take before its connection is dropped and the call fails with a 503."""

CLOSE_TIMEOUT = 5.0
"""Seconds that closing the store waits for running calls."""

BACKOFF = (0.25, 10.0)
"""The first and the largest delay, in seconds, between attempts to reconnect."""

RETRY_AFTER = 2
"""What a 503 tells clients (C{Retry-After}, seconds) while the database is away."""

_ROOM_COLUMNS = (
    "id, name, title, state, created_at, expires_at, max_length, password_hash,"
    " owner_token_hash, hashtags, last_seq, qa, moderation, locked, host_name, pinned_seq,"
    " restricted, peak_online"
)
_ROOM_WITH_PARTICIPANT = (
    "SELECT " + ", ".join(f"r.{column.strip()}" for column in _ROOM_COLUMNS.split(","))
    + ", p.id, p.nickname, p.muted FROM rooms r"
    " LEFT JOIN participants p ON p.room_id = r.id AND p.token_hash = %s WHERE r.name = %s"
)

_MESSAGE_COLUMNS = ("m.seq, m.kind, m.author, m.body, m.created_at, m.source, m.participant_id,"
                    " m.question, m.votes, m.answered, m.seq = r.pinned_seq, m.host, m.edited")
"""A message's columns (C{m} is the message's table), as L{_message} takes them after the name."""

_DELIVERY_COLUMNS = "id, destination, created_at, method, path, content_type, event, body"


def _insert_deliveries(param: str, after: str | None = None, body: str = "b.body") -> str:
    """
    The INSERT of the deliveries in C{param} (from L{_deliveries}) into the outbox, in
    order; with C{after}, once for each row of that CTE, so only if its change happened.
    C{body} is the stored body, an expression of the decoded C{b.body}.
    """
    source = f"{after}, " if after is not None else ""
    return (
        f"INSERT INTO outbox ({_DELIVERY_COLUMNS})"
        " SELECT o.id, o.destination, o.created_at, o.method, o.path, o.content_type, o.event,"
        f" {body} FROM {source}ROWS FROM (json_to_recordset({param}::json) AS ("
        "id text, destination text, created_at bigint, method text, path text,"
        " content_type text, event text, body text)) WITH ORDINALITY AS o,"
        " LATERAL decode(o.body, 'base64') AS b (body)"
        " ORDER BY o.ordinality ON CONFLICT (id, destination) DO NOTHING"
    )


def _outboxed(after: str, param: str = "%s", body: str = "b.body") -> str:
    """One more CTE for a write's statement: L{_insert_deliveries} after the CTE C{after}."""
    return f", outboxed AS ({_insert_deliveries(param, after, body)})"


def _deliveries(deliveries: Sequence[Delivery]) -> str:
    """C{deliveries} as one parameter: a JSON array, bodies in base64."""
    return json.dumps([
        {"id": d.id, "destination": d.destination, "created_at": d.created_at,
         "method": d.method, "path": d.path, "content_type": d.content_type, "event": d.event,
         "body": base64.b64encode(d.body).decode("ascii")}
        for d in deliveries
    ])


# The outbox is opt-in: each write below has its statement without one (as it always was)
# and one with a CTE more, which stores the deliveries in the same statement and transaction.

_POST_NEXT = """
WITH next AS (
    UPDATE rooms SET last_seq = last_seq + 1 WHERE id = %(room_id)s RETURNING id, last_seq
)"""
_POST_INSERT = """, inserted AS (
    INSERT INTO messages (room_id, seq, kind, author, participant_id, body, created_at, source,
                          question, host, edited)
    SELECT id, last_seq, %(kind)s, %(author)s, %(participant_id)s, %(body)s, %(created_at)s,
           %(source)s::jsonb, %(question)s, %(host)s, %(edited)s
    FROM next RETURNING seq
)"""
_POST_CHANGE = _POST_NEXT + _POST_INSERT
_POST_NOTIFY = """
SELECT seq, pg_notify(%(channel)s, %(head)s || seq || %(tail)s) FROM inserted
"""
_POST = _POST_CHANGE + _POST_NOTIFY

# In each body the first placeholder becomes the seq, as Delivery.with_seq does it.
_PLACEHOLDER = f"'\\x{SEQ_PLACEHOLDER.hex()}'::bytea"
_POST_OUTBOX = _POST_CHANGE + _outboxed(
    "inserted", "%(outbox)s",
    f"CASE position({_PLACEHOLDER} IN b.body) WHEN 0 THEN b.body"
    f" ELSE overlay(b.body PLACING convert_to('\"seq\":' || inserted.seq, 'UTF8')"
    f" FROM position({_PLACEHOLDER} IN b.body) FOR {len(SEQ_PLACEHOLDER)}) END",
) + _POST_NOTIFY

_CREATE_ROOM = (
    "INSERT INTO rooms (name, title, created_at, expires_at, max_length,"
    " password_hash, hashtags, owner_token_hash, qa, moderation, host_name)"
    f" VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s) RETURNING {_ROOM_COLUMNS}"
)
_CREATE_ROOM_OUTBOX = (f"WITH created AS ({_CREATE_ROOM}){_outboxed('created')}"
                       " SELECT * FROM created")

_UPDATE_ROOM_CHANGE = (
    "WITH updated AS (UPDATE rooms SET state = %s, title = %s, hashtags = %s::jsonb,"
    " expires_at = %s, qa = %s, moderation = %s, locked = %s, host_name = %s"
    f" WHERE id = %s RETURNING {_ROOM_COLUMNS})"
)
_UPDATE_ROOM_NOTIFY = " SELECT updated.*, pg_notify(%s, %s) FROM updated"
_UPDATE_ROOM = _UPDATE_ROOM_CHANGE + _UPDATE_ROOM_NOTIFY
_UPDATE_ROOM_OUTBOX = _UPDATE_ROOM_CHANGE + _outboxed("updated") + _UPDATE_ROOM_NOTIFY

_DELETE_NOTIFY = " SELECT pg_notify(%s, %s) FROM deleted"
_DELETE_ROOM_CHANGE = "WITH deleted AS (DELETE FROM rooms WHERE id = %s RETURNING id)"
_DELETE_ROOM = _DELETE_ROOM_CHANGE + _DELETE_NOTIFY
_DELETE_ROOM_OUTBOX = _DELETE_ROOM_CHANGE + _outboxed("deleted") + _DELETE_NOTIFY

_DELETE_MESSAGE_CHANGE = (
    "WITH deleted AS (UPDATE messages SET deleted = true"
    " WHERE room_id = %s AND seq = %s AND NOT deleted RETURNING room_id, seq),"
    " unpinned AS (UPDATE rooms SET pinned_seq = NULL FROM deleted"
    " WHERE rooms.id = deleted.room_id AND rooms.pinned_seq = deleted.seq)"
)
_DELETE_MESSAGE = _DELETE_MESSAGE_CHANGE + _DELETE_NOTIFY
_DELETE_MESSAGE_OUTBOX = _DELETE_MESSAGE_CHANGE + _outboxed("deleted") + _DELETE_NOTIFY

_ADD_OUTBOX = _insert_deliveries("%s")

_PARTICIPANT_STATS = participant_stats("%(room)s")
_ROOM_STATS = room_stats("%(room)s")

_MESSAGES = f"""
SELECT r.last_seq, m.* FROM rooms r LEFT JOIN LATERAL (
    SELECT {_MESSAGE_COLUMNS} FROM messages m
    WHERE m.room_id = r.id AND m.seq > %(after)s AND NOT m.deleted ORDER BY m.seq LIMIT %(limit)s
) m ON true
WHERE r.id = %(room_id)s ORDER BY m.seq
"""

_TOP_QUESTIONS, _NEWEST_QUESTIONS = (f"""
SELECT r.last_seq, m.* FROM rooms r LEFT JOIN LATERAL (
    SELECT {_MESSAGE_COLUMNS} FROM messages m
    WHERE m.room_id = r.id AND m.question AND NOT m.deleted ORDER BY {order} LIMIT %(limit)s
) m ON true
WHERE r.id = %(room_id)s ORDER BY {outer}
""" for order, outer in (("m.votes DESC, m.seq", "m.votes DESC, m.seq"),
                        ("m.seq DESC", "m.seq DESC")))

_MESSAGE = f"""
SELECT r.name, {_MESSAGE_COLUMNS} FROM messages m JOIN rooms r ON r.id = m.room_id
WHERE m.room_id = %(room_id)s AND m.seq = %(seq)s AND NOT m.deleted
"""

# Other daemons hear that the message changed, and read it themselves (as bus.update_notice).
_ANNOUNCE_CHANGE = _MESSAGE.replace(
    "FROM messages m", ", pg_notify(%(channel)s, json_build_object('o', %(origin)s, 'k', 'u',"
    " 'r', m.room_id, 'n', r.name, 's', m.seq)::text) FROM messages m", 1)

# A vote locks its question's row: concurrent votes on it count one after another.
_VOTE_TARGET = """
WITH target AS (
    SELECT room_id, seq FROM messages
    WHERE room_id = %(room_id)s AND seq = %(seq)s AND question AND NOT deleted FOR UPDATE
)"""
_VOTE = _VOTE_TARGET + """, changed AS (
    INSERT INTO votes (room_id, seq, participant_id, created_at)
    SELECT room_id, seq, %(participant_id)s, %(now)s FROM target ON CONFLICT DO NOTHING RETURNING 1
), counted AS (
    UPDATE messages m SET votes = m.votes + (SELECT count(*) FROM changed) FROM target t
    WHERE m.room_id = t.room_id AND m.seq = t.seq RETURNING m.votes
)
SELECT votes FROM counted
"""
_UNVOTE = _VOTE_TARGET + """, changed AS (
    DELETE FROM votes v USING target t
    WHERE v.room_id = t.room_id AND v.seq = t.seq AND v.participant_id = %(participant_id)s
    RETURNING 1
), counted AS (
    UPDATE messages m SET votes = m.votes - (SELECT count(*) FROM changed) FROM target t
    WHERE m.room_id = t.room_id AND m.seq = t.seq RETURNING m.votes
)
SELECT votes FROM counted
"""

# The seq pinned before comes from the row as locked, so concurrent pins each see the last.
_PIN = f"""
WITH updated AS (
    UPDATE rooms r SET pinned_seq = %(seq)s
    FROM (SELECT id, pinned_seq FROM rooms WHERE id = %(room_id)s FOR UPDATE) o
    WHERE r.id = o.id RETURNING {", ".join("r." + c.strip() for c in _ROOM_COLUMNS.split(","))},
    o.pinned_seq AS before
)
SELECT updated.*, pg_notify(%(channel)s, %(notice)s) FROM updated
"""

_HELD_COLUMNS = "id, participant_id, author, body, question, created_at, reason, matched"

_HOLD = f"""
WITH added AS (
    INSERT INTO held (room_id, {_HELD_COLUMNS})
    VALUES (%(room_id)s, %(id)s, %(participant_id)s, %(author)s, %(body)s, %(question)s,
            %(created_at)s, %(reason)s, %(matched)s::jsonb)
    RETURNING id
)
SELECT pg_notify(%(channel)s, %(notice)s) FROM added
"""

# Approving moves a held post into the messages: the post's statement, with the room's next
# seq taken only if the post was still held (approved once, however many approve it at once).
_APPROVE_NEXT = """
WITH taken AS (
    DELETE FROM held WHERE room_id = %(room_id)s AND id = %(held_id)s RETURNING id
), next AS (
    UPDATE rooms SET last_seq = last_seq + 1
    WHERE id = %(room_id)s AND EXISTS (SELECT FROM taken) RETURNING id, last_seq
)"""
_APPROVE_NOTIFY = """
SELECT seq, pg_notify(%(channel)s, %(head)s || seq || %(tail)s),
       pg_notify(%(channel)s, %(released)s || seq || '}') FROM inserted
"""
_APPROVE = _APPROVE_NEXT + _POST_INSERT + _APPROVE_NOTIFY
_APPROVE_OUTBOX = _APPROVE_NEXT + _POST_INSERT + _POST_OUTBOX[len(_POST_CHANGE):].replace(
    _POST_NOTIFY, _APPROVE_NOTIFY)

_REJECT = f"""
WITH gone AS (
    DELETE FROM held WHERE room_id = %(room_id)s AND id = %(held_id)s RETURNING {_HELD_COLUMNS}
)
SELECT gone.*, pg_notify(%(channel)s, json_build_object(
    'o', %(origin)s, 'k', 'a', 'r', %(room_id)s, 'n', %(name)s, 'h', id, 'p', participant_id,
    's', NULL)::text)
FROM gone
"""

# Rooms the reaper takes are locked and skipped by the others (SKIP LOCKED), so each room
# is closed or purged by one daemon; each row notifies as bus.room_notice would.
_CLOSE_EXPIRED = f"""
WITH closed AS (
    UPDATE rooms SET state = 'closed'
    WHERE id IN (
        SELECT id FROM rooms WHERE expires_at <= %(now)s AND state <> 'closed'
        ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) AND state <> 'closed'
    RETURNING {_ROOM_COLUMNS}
)
SELECT closed.*, pg_notify(%(channel)s,
                           json_build_object('o', %(origin)s, 'k', 'r', 'r', id, 'n', name)::text)
FROM closed
"""

_PURGE_EXPIRED = f"""
WITH purged AS (
    DELETE FROM rooms
    WHERE id IN (
        SELECT id FROM rooms WHERE expires_at <= %(before)s
        ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    )
    RETURNING {_ROOM_COLUMNS}
)
SELECT purged.*, pg_notify(%(channel)s,
                           json_build_object('o', %(origin)s, 'k', 'x', 'r', id, 'n', name)::text)
FROM purged
"""

_CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionDone,
                      ConnectionLost)


def describe(url: str) -> str:
    """C{url} without its password, for messages: C{user@host:port/db}."""
    try:
        dsn = parse_dsn(url)
    except psycopg2.ProgrammingError:
        return "(an invalid URL)"
    user = dsn.get("user", "")
    return (f"{user + '@' if user else ''}{dsn.get('host', 'localhost')}:{dsn.get('port', 5432)}"
            f"/{dsn.get('dbname', user)}")


def check_url(url: str) -> None:
    """Raise C{ValueError} saying what is wrong if libpq cannot read C{url}."""
    try:
        parse_dsn(url)
    except psycopg2.ProgrammingError as e:
        raise ValueError(f"The database URL is not one PostgreSQL understands: {e}".strip()) \
            from None


def backoff(first: float, largest: float) -> Iterator[float]:
    """Delays between attempts: doubling from C{first} up to C{largest}, each with +-20 % jitter."""
    delay = first
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, largest)


class _Connection(Connection):
    """A txpostgres connection that says when it is lost, even while idle."""

    def __init__(self, reactor: Any, lost: Callable[[_Connection], None]) -> None:
        super().__init__(reactor)
        self._lost = lost

    def doRead(self) -> object:
        try:
            super().doRead()
        except psycopg2.Error:  # the server closed the connection while it was idle
            return CONNECTION_LOST
        return None

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._lost(self)


class Link:
    """
    One connection to PostgreSQL that comes back by itself.

    C{on_up} runs on each new connection before it is used (the Bus LISTENs there);
    C{run} hands work to the connection, or fails with L{Unavailable} while it is down.
    """

    log = Logger()

    def __init__(self, reactor: Any, connect_args: dict[str, Any], where: str,
                 on_up: Callable[[Connection], Any] = lambda connection: None) -> None:
        self._reactor = reactor
        self._connect_args = connect_args
        self._where = where
        self._on_up = on_up
        self.connection: Connection | None = None
        self.busy = 0
        self._delays: Iterator[float] | None = None
        self._retry: IDelayedCall | None = None
        self._connecting: Connection | None = None
        self._idle: list[Deferred[None]] = []
        self._stopped = False

    @property
    def up(self) -> bool:
        return self.connection is not None

    async def start(self) -> None:
        """Connect once; fails with L{Unavailable} if PostgreSQL cannot be reached."""
        try:
            await self._connect()
        except _CONNECTION_ERRORS as e:
            raise Unavailable(f"Cannot connect to PostgreSQL at {self._where}: "
                              f"{_first_line(e)}") from None

    async def _connect(self) -> None:
        connection = self._connecting = _Connection(self._reactor, self._lost)
        timer = self._reactor.callLater(CONNECT_TIMEOUT, connection.close)
        try:
            await connection.connect(**self._connect_args)
        except ConnectionDone:
            raise psycopg2.OperationalError(
                f"no answer within {CONNECT_TIMEOUT:g} seconds") from None
        finally:
            self._connecting = None
            if timer.active():
                timer.cancel()
        try:
            await maybeDeferred(self._on_up, connection)
        except BaseException:
            connection.close()
            raise
        if self._stopped:
            connection.close()
            return
        self.connection = connection

    def run(self, work: Callable[[Connection], Deferred[T]]) -> Deferred[T]:
        """C{work(connection)}, failing with L{Unavailable} if the connection is or goes down."""
        connection = self.connection
        if connection is None:
            return _unavailable()
        self.busy += 1
        deadline = self._reactor.callLater(QUERY_TIMEOUT, self._timed_out, connection)

        def done(result: T | Failure) -> T | Failure:
            self.busy -= 1
            if not self.busy:
                waiting, self._idle = self._idle, []
                for d in waiting:
                    d.callback(None)
            if deadline.active():
                deadline.cancel()
            if isinstance(result, Failure) and result.check(*_CONNECTION_ERRORS):
                self._lost(connection)
                return _unavailable_failure()
            return result

        return work(connection).addBoth(done)

    def _timed_out(self, connection: Connection) -> None:
        self.log.warn("PostgreSQL at {where} did not answer in {seconds:g} s: reconnecting",
                      where=self._where, seconds=QUERY_TIMEOUT)
        self._lost(connection)

    def _lost(self, connection: Any) -> None:
        if connection is not self.connection or connection is None:
            return  # an old connection, or one we closed on purpose
        self.connection = None
        self.log.warn("lost the connection to PostgreSQL at {where}", where=self._where)
        if not connection.closed:
            connection.close()  # fails its pending calls with ConnectionDone
        self._delays = backoff(*BACKOFF)
        self._schedule()

    def _schedule(self) -> None:
        if not self._stopped:
            assert self._delays is not None
            self._retry = self._reactor.callLater(next(self._delays), self._reconnect)

    def _reconnect(self) -> None:
        self._retry = None

        def connected(_: object) -> None:
            if self.connection is not None:
                self.log.info("reconnected to PostgreSQL at {where}", where=self._where)

        def failed(failure: Failure) -> None:
            self.log.debug("reconnecting failed: {error}", error=failure.getErrorMessage())
            self._schedule()

        Deferred.fromCoroutine(self._connect()).addCallbacks(connected, failed)

    def idle(self) -> Deferred[None]:
        """Fires once no call is running on this link."""
        if not self.busy:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        for connection in (self._connecting, self.connection):
            if connection is not None:
                self.connection = None
                connection.close()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [error.__class__.__name__])[0]


def _unavailable() -> Deferred[Any]:
    return fail(_unavailable_failure())


def _unavailable_failure() -> Failure:
    return Failure(Unavailable("The database is unavailable: try again in a moment.",
                               retry_after=RETRY_AFTER))


def _deferred(f: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Deferred[T]]:
    """Make a coroutine method return a Deferred, as L{IStore} promises."""

    @wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    return wrapper


def _outbox_parameter(outbox: Sequence[Delivery]) -> tuple[str, ...]:
    """The parameter of the statements with an outbox, or none for those without."""
    return (_deliveries(outbox),) if outbox else ()


def _posted(room: Room, new: NewMessage, seq: int) -> Message:
    """The message C{new} became, with its seq."""
    return Message(seq=seq, room=room.name, kind=new.kind, author=new.author, body=new.body,
                   created_at=new.created_at, source=new.source,
                   participant_id=new.participant_id, question=new.question, host=new.host,
                   edited=new.edited)


def _delivery(id: str, destination: str, created_at: int, method: str, path: str,
              content_type: str | None, event: str | None, body: memoryview) -> Delivery:
    return Delivery(id=id, destination=destination, created_at=created_at, method=method,
                    path=path, content_type=content_type, event=event, body=bytes(body))


def _room(row: Sequence[Any]) -> Room:
    (id, name, title, state, created_at, expires_at, max_length, password_hash,
     owner_token_hash, hashtags, last_seq, qa, moderation, locked, host_name, pinned_seq,
     restricted, peak_online) = row
    return Room(
        id=id, name=name, title=title, state=state, created_at=created_at,
        expires_at=expires_at, max_length=max_length, password_hash=password_hash,
        owner_token_hash=bytes(owner_token_hash), hashtags=tuple(hashtags), last_seq=last_seq,
        qa=qa, moderation=moderation, locked=locked, host_name=host_name, pinned=pinned_seq,
        restricted=Restricted.from_json(restricted), peak_online=peak_online,
    )


def _message(room_name: str, seq: int, kind: str, author: str | None, body: str,
             created_at: int, source: dict[str, Any] | None,
             participant_id: str | None, question: bool = False, votes: int = 0,
             answered: bool = False, pinned: bool | None = False, host: bool = False,
             edited: bool = False) -> Message:
    return Message(seq=seq, room=room_name, kind=kind, author=author, body=body,
                   created_at=created_at, source=source, participant_id=participant_id,
                   question=question, votes=votes, answered=answered, pinned=bool(pinned),
                   host=host, edited=edited)


def _held(room: Room, id: str, participant_id: str, author: str, body: str, question: bool,
          created_at: int, reason: str, matched: list[str]) -> Held:
    return Held(id=id, room_id=room.id, room=room.name, participant_id=participant_id,
                author=author, body=body, question=question, created_at=created_at,
                reason=reason, matched=tuple(matched))


@implementer(IStore)
class PostgresStore:
    """
    L{IStore} on PostgreSQL, through a pool of L{Link}s.

    C{origin} names this daemon on the Bus; C{channel} is the NOTIFY channel of the
    database schema in use (known once open).
    """

    log = Logger()

    def __init__(self, url: str, reactor: Any, pool_size: int = 4,
                 password: str | None = None) -> None:
        self._reactor = reactor
        self.where = describe(url)
        self.connect_args: dict[str, Any] = {
            "dsn": url, "application_name": parse_dsn(url).get("application_name", "tmd"),
            # Notice a dead peer (a cable pulled) within about 20 s, even while idle.
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
            "keepalives_count": 3,
        }
        if password is not None:
            self.connect_args["password"] = password
        self._links = [Link(reactor, self.connect_args, self.where) for _ in range(pool_size)]
        self.origin = tokens.new_id()
        self.channel = "tmd"

    def link(self, on_up: Callable[[Connection], Any]) -> Link:
        """A connection of its own to the same database (the Bus listens on one)."""
        return Link(self._reactor, self.connect_args, self.where, on_up)

    @_deferred
    async def open(self) -> None:
        try:
            await gatherResults([Deferred.fromCoroutine(link.start()) for link in self._links],
                                consumeErrors=True)
        except FirstError as e:
            for link in self._links:
                link.stop()
            e.subFailure.raiseException()
        found = await deferToThread(migrations, "postgresql")
        schema = await self._run(lambda c: c.runInteraction(self._migrate, found))
        self.channel = f"tmd.{schema}"[:63]

    def _migrate(self, cursor: Cursor, found: list[Migration]) -> Deferred[str]:
        async def migrate() -> str:
            # One daemon migrates at a time; the others wait here, then find nothing to do.
            await cursor.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")
            await cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            await cursor.execute(
                "SELECT coalesce(max(version), 0), current_schema() FROM schema_version")
            current, schema = cursor.fetchone()
            for migration in found:
                if migration.version > current:
                    self.log.info("applying migration {version} {name}",
                                  version=migration.version, name=migration.name)
                    await cursor.execute(migration.sql)
                    await cursor.execute("INSERT INTO schema_version VALUES (%s)",
                                         (migration.version,))
            return str(schema)

        return Deferred.fromCoroutine(migrate())

    def _run(self, work: Callable[[Connection], Deferred[T]]) -> Deferred[T]:
        """C{work} on the least busy connection that is up; L{Unavailable} if none is."""
        up = [link for link in self._links if link.up]
        if not up:
            return _unavailable()
        return min(up, key=lambda link: link.busy).run(work)

    def _query(self, sql: str, params: Any = None) -> Deferred[list[tuple[Any, ...]]]:
        return self._run(lambda c: c.runQuery(sql, params))

    def _execute(self, sql: str, params: Any = None) -> Deferred[None]:
        return self._run(lambda c: c.runOperation(sql, params))

    @_deferred
    async def close(self) -> None:
        """Let running calls finish (for a few seconds at most), then disconnect."""
        idle = DeferredList([link.idle() for link in self._links])
        try:
            await idle.addTimeout(CLOSE_TIMEOUT, self._reactor)
        except TimeoutError:
            self.log.warn("closing the database with calls still running")
        for link in self._links:
            link.stop()

    def check(self) -> Deferred[None]:
        return self._query("SELECT 1").addCallback(lambda _: None)

    @_deferred
    async def create_room(self, new: NewRoom, outbox: Sequence[Delivery] = ()) -> Room:
        try:
            [row] = await self._query(
                _CREATE_ROOM_OUTBOX if outbox else _CREATE_ROOM,
                (new.name, new.title, new.created_at, new.expires_at, new.max_length,
                 new.password_hash, json.dumps(list(new.hashtags)), new.owner_token_hash,
                 new.qa, new.moderation, new.host_name, *_outbox_parameter(outbox)))
        except psycopg2.errors.UniqueViolation as e:
            if e.diag.constraint_name != "rooms_name_key":
                raise
            raise NameTaken(f"The room name '{new.name}' is taken.") from None
        return _room(row)

    @_deferred
    async def room(self, name: str) -> Room | None:
        rows = await self._query(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE name = %s", (name,))
        return _room(rows[0]) if rows else None

    @_deferred
    async def add_participant(self, room_id: int, participant_id: str, nickname: str,
                              token_hash: bytes, now_ms: int) -> Participant:
        try:
            await self._execute(
                "INSERT INTO participants (id, room_id, nickname, nickname_key, token_hash,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (participant_id, room_id, nickname, nickname_key(nickname), token_hash, now_ms))
        except psycopg2.errors.UniqueViolation as e:
            if e.diag.constraint_name != "participants_nickname_key":
                raise
            raise NameTaken(f"The nickname '{nickname}' is taken in this room.") from None
        return Participant(id=participant_id, room_id=room_id, nickname=nickname, muted=False)

    @_deferred
    async def participant(self, room_id: int, token_hash: bytes) -> Participant | None:
        rows = await self._query(
            "SELECT id, nickname, muted FROM participants WHERE token_hash = %s AND room_id = %s",
            (token_hash, room_id))
        if not rows:
            return None
        [(id, nickname, muted)] = rows
        return Participant(id=id, room_id=room_id, nickname=nickname, muted=muted)

    @_deferred
    async def room_with_participant(self, name: str, token_hash: bytes,
                                    ) -> tuple[Room, Participant | None] | None:
        rows = await self._query(_ROOM_WITH_PARTICIPANT, (token_hash, name))
        if not rows:
            return None
        room = _room(rows[0][:-3])
        id, nickname, muted = rows[0][-3:]
        if id is None:
            return room, None
        return room, Participant(id=id, room_id=room.id, nickname=nickname, muted=muted)

    @_deferred
    async def participants(self, room: Room) -> list[Participant]:
        rows = await self._query(
            "SELECT id, nickname, muted FROM participants WHERE room_id = %s"
            " ORDER BY created_at, id", (room.id,))
        return [Participant(id=id, room_id=room.id, nickname=nickname, muted=muted)
                for id, nickname, muted in rows]

    @_deferred
    async def set_muted(self, room: Room, participant_id: str, muted: bool) -> bool:
        rows = await self._query(
            "UPDATE participants SET muted = %s WHERE room_id = %s AND id = %s RETURNING id",
            (muted, room.id, participant_id))
        return bool(rows)

    @_deferred
    async def post(self, room: Room, new: NewMessage,
                   outbox: Sequence[Delivery] = ()) -> Message:
        rows = await self._query(_POST_OUTBOX if outbox else _POST,
                                 self._post_parameters(room, new, outbox))
        if not rows:
            raise NotFound(f"There is no room '{room.name}'.")
        return _posted(room, new, rows[0][0])

    def _post_parameters(self, room: Room, new: NewMessage,
                         outbox: Sequence[Delivery]) -> dict[str, Any]:
        head, tail = bus.message_notice(self.origin, room, new)
        params = {
            "room_id": room.id, "kind": new.kind, "author": new.author,
            "participant_id": new.participant_id, "body": new.body, "created_at": new.created_at,
            "source": json.dumps(new.source) if new.source is not None else None,
            "question": new.question, "host": new.host, "edited": new.edited,
            "channel": self.channel, "head": head, "tail": tail,
        }
        if outbox:
            params["outbox"] = _deliveries(outbox)
        return params

    @_deferred
    async def update_room(self, room: Room, changed: RoomChanges,
                          outbox: Sequence[Delivery] = ()) -> Room | None:
        rows = await self._query(
            _UPDATE_ROOM_OUTBOX if outbox else _UPDATE_ROOM,
            (changed.state, changed.title, json.dumps(list(changed.hashtags)),
             changed.expires_at, changed.qa, changed.moderation, changed.locked,
             changed.host_name, room.id, *_outbox_parameter(outbox), self.channel,
             bus.room_notice(self.origin, "r", room)))
        return _room(rows[0][:-1]) if rows else None

    @_deferred
    async def delete_room(self, room: Room, outbox: Sequence[Delivery] = ()) -> bool:
        rows = await self._query(
            _DELETE_ROOM_OUTBOX if outbox else _DELETE_ROOM,
            (room.id, *_outbox_parameter(outbox), self.channel,
             bus.room_notice(self.origin, "x", room)))
        return bool(rows)

    @_deferred
    async def close_expired(self, now_ms: int, limit: int) -> list[Room]:
        rows = await self._query(_CLOSE_EXPIRED, {
            "now": now_ms, "limit": limit, "channel": self.channel, "origin": self.origin})
        return [_room(row[:-1]) for row in rows]

    @_deferred
    async def purge_expired(self, before_ms: int, limit: int) -> list[Room]:
        rows = await self._query(_PURGE_EXPIRED, {
            "before": before_ms, "limit": limit, "channel": self.channel, "origin": self.origin})
        return [_room(row[:-1]) for row in rows]

    @_deferred
    async def delete_message(self, room: Room, seq: int,
                             outbox: Sequence[Delivery] = ()) -> bool:
        rows = await self._query(
            _DELETE_MESSAGE_OUTBOX if outbox else _DELETE_MESSAGE,
            (room.id, seq, *_outbox_parameter(outbox), self.channel,
             bus.room_notice(self.origin, "d", room, seq=seq)))
        return bool(rows)

    @_deferred
    async def tagged_rooms(self, now_ms: int) -> list[Room]:
        rows = await self._query(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE state = 'open' AND expires_at > %s"
            " AND hashtags <> '[]'::jsonb ORDER BY id", (now_ms,))
        return [_room(row) for row in rows]

    @_deferred
    async def social_message(self, room: Room, network: str, source_id: str) -> int | None:
        rows = await self._query(
            "SELECT seq FROM messages WHERE room_id = %s AND kind = 'social' AND NOT deleted"
            " AND source->>'network' = %s AND source->>'id' = %s ORDER BY seq LIMIT 1",
            (room.id, network, source_id))
        return rows[0][0] if rows else None

    @_deferred
    async def messages(self, room: Room, after: int, limit: int) -> tuple[list[Message], int]:
        rows = await self._query(_MESSAGES, {"room_id": room.id, "after": after, "limit": limit})
        if not rows:
            raise NotFound(f"There is no room '{room.name}'.")
        found = [_message(room.name, *row[1:]) for row in rows if row[1] is not None]
        return found, rows[0][0]

    @_deferred
    async def message(self, room_id: int, seq: int) -> Message | None:
        rows = await self._query(_MESSAGE, {"room_id": room_id, "seq": seq})
        return _message(*rows[0]) if rows else None

    @_deferred
    async def announce_change(self, room: Room, seq: int) -> Message | None:
        rows = await self._query(_ANNOUNCE_CHANGE, {
            "room_id": room.id, "seq": seq, "channel": self.channel, "origin": self.origin})
        return _message(*rows[0][:-1]) if rows else None

    @_deferred
    async def vote(self, room: Room, seq: int, participant_id: str, on: bool,
                   now_ms: int) -> int | None:
        rows = await self._query(_VOTE if on else _UNVOTE, {
            "room_id": room.id, "seq": seq, "participant_id": participant_id, "now": now_ms})
        return int(rows[0][0]) if rows else None

    @_deferred
    async def voted(self, room: Room, participant_id: str) -> list[int]:
        rows = await self._query(
            "SELECT v.seq FROM votes v JOIN messages m ON m.room_id = v.room_id AND m.seq = v.seq"
            " WHERE v.room_id = %s AND v.participant_id = %s AND NOT m.deleted ORDER BY v.seq",
            (room.id, participant_id))
        return [seq for (seq,) in rows]

    @_deferred
    async def set_answered(self, room: Room, seq: int, answered: bool) -> bool:
        rows = await self._query(
            "UPDATE messages SET answered = %s WHERE room_id = %s AND seq = %s AND question"
            " AND NOT deleted RETURNING seq", (answered, room.id, seq))
        return bool(rows)

    @_deferred
    async def pin(self, room: Room, seq: int | None) -> tuple[Room, int | None] | None:
        rows = await self._query(_PIN, {
            "room_id": room.id, "seq": seq, "channel": self.channel,
            "notice": bus.room_notice(self.origin, "r", room)})
        if not rows:
            return None
        return _room(rows[0][:-2]), rows[0][-2]

    @_deferred
    async def set_restricted(self, room: Room, restricted: Restricted) -> Room | None:
        rows = await self._query(
            f"UPDATE rooms SET restricted = %s::jsonb WHERE id = %s RETURNING {_ROOM_COLUMNS}",
            (json.dumps(restricted.to_json()), room.id))
        return _room(rows[0]) if rows else None

    @_deferred
    async def questions(self, room: Room, top: bool, limit: int) -> tuple[list[Message], int]:
        rows = await self._query(_TOP_QUESTIONS if top else _NEWEST_QUESTIONS,
                                 {"room_id": room.id, "limit": limit})
        if not rows:
            raise NotFound(f"There is no room '{room.name}'.")
        found = [_message(room.name, *row[1:]) for row in rows if row[1] is not None]
        return found, rows[0][0]

    @_deferred
    async def hold(self, held: Held) -> None:
        await self._query(_HOLD, {
            "room_id": held.room_id, "id": held.id, "participant_id": held.participant_id,
            "author": held.author, "body": held.body, "question": held.question,
            "created_at": held.created_at, "reason": held.reason,
            "matched": json.dumps(list(held.matched)), "channel": self.channel,
            "notice": bus.held_notice(self.origin, held)})

    @_deferred
    async def held_posts(self, room: Room, participant_id: str | None) -> list[Held]:
        rows = await self._query(
            f"SELECT {_HELD_COLUMNS} FROM held WHERE room_id = %(room_id)s"
            " AND (%(participant_id)s::text IS NULL OR participant_id = %(participant_id)s)"
            " ORDER BY created_at, id", {"room_id": room.id, "participant_id": participant_id})
        return [_held(room, *row) for row in rows]

    @_deferred
    async def held_post(self, room: Room, held_id: str) -> Held | None:
        rows = await self._query(
            f"SELECT {_HELD_COLUMNS} FROM held WHERE room_id = %s AND id = %s",
            (room.id, held_id))
        return _held(room, *rows[0]) if rows else None

    @_deferred
    async def approve(self, room: Room, held_id: str, new: NewMessage,
                      outbox: Sequence[Delivery] = ()) -> Message | None:
        assert new.participant_id is not None
        params = self._post_parameters(room, new, outbox)
        params["held_id"] = held_id
        params["released"] = bus.released_notice(self.origin, room, held_id, new.participant_id)
        rows = await self._query(_APPROVE_OUTBOX if outbox else _APPROVE, params)
        return _posted(room, new, rows[0][0]) if rows else None

    @_deferred
    async def reject(self, room: Room, held_id: str) -> Held | None:
        rows = await self._query(_REJECT, {
            "room_id": room.id, "held_id": held_id, "name": room.name, "channel": self.channel,
            "origin": self.origin})
        return _held(room, *rows[0][:-1]) if rows else None

    @_deferred
    async def stats(self, room: Room) -> RoomStats:
        params = {"room": room.id}
        people = await self._query(_PARTICIPANT_STATS, params)
        totals = await self._query(_ROOM_STATS, params)
        if not totals:
            raise NotFound(f"There is no room '{room.name}'.")
        messages, questions, host_messages, votes, held, peak_online = totals[0]
        return RoomStats(
            participants=tuple(ParticipantStats(*row) for row in people), messages=messages,
            questions=questions, votes=votes, host_messages=host_messages, held=held,
            peak_online=peak_online)

    def raise_peak(self, room_id: int, online: int) -> Deferred[None]:
        return self._execute(
            "UPDATE rooms SET peak_online = %s WHERE id = %s AND peak_online < %s",
            (online, room_id, online))

    def add_outbox(self, deliveries: Sequence[Delivery]) -> Deferred[None]:
        if not deliveries:
            return succeed(None)
        return self._execute(_ADD_OUTBOX, (_deliveries(deliveries),))

    @_deferred
    async def pending_deliveries(self, limit: int, destination: str | None = None,
                                 ) -> list[Delivery]:
        rows = await self._query(
            f"SELECT {_DELIVERY_COLUMNS} FROM outbox WHERE NOT dead"
            " AND (%s::text IS NULL OR destination = %s) ORDER BY position LIMIT %s",
            (destination, destination, limit))
        return [_delivery(*row) for row in rows]

    def delivered(self, delivery: Delivery) -> Deferred[None]:
        return self._execute("DELETE FROM outbox WHERE id = %s AND destination = %s",
                             (delivery.id, delivery.destination))

    def dead_letter(self, delivery: Delivery) -> Deferred[None]:
        return self._execute("UPDATE outbox SET dead = true WHERE id = %s AND destination = %s",
                             (delivery.id, delivery.destination))
